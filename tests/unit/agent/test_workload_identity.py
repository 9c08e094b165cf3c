"""Per-replica SVID files on a fake clock: issued before start, swapped atomically at 2/3 of
their life, retried when the coordinator is away, deleted with the replica; and who may
have one (``svid.issuance_refusal``, a table)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from cryptography import x509

from cloudless.agent.workload_identity import WorkloadIdentities
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import DesiredState, Replica
from cloudless.security import svid
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId

TTL = 3600


class FakeCoordinator:
    """Signs with a real CA (on the fake clock); can be made unreachable."""

    def __init__(self, tmp: Path, clock: FakeClock) -> None:
        self.ca = CertificateAuthority.init(tmp / "ca", clock=clock, root_key_size=2048)
        self.down = False
        self.calls: list[str] = []

    async def issue(self, workload: str, rid: str, csr: bytes, ttl: int) -> tuple[bytes, bytes]:
        self.calls.append(rid)
        if self.down:
            raise ConnectionError("coordinator unreachable")
        sid = svid.workload_identity(rid, self.ca.trust_domain)
        cert = self.ca.sign_csr(csr, sid, CertKind.WORKLOAD, ttl_seconds=ttl)
        return cert, self.ca.bundle_pem


def _serial(d: Path) -> int:
    return x509.load_pem_x509_certificate((d / svid.CERT_FILE).read_bytes()).serial_number


def _files(d: Path) -> tuple[bool, bool, int]:
    """(directory exists, certificate exists, generations kept)."""
    return d.is_dir(), (d / svid.CERT_FILE).exists(), len(list(d.glob("..gen-*")))


async def _settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # the file writes run in a thread


async def test_issue_renew_retry_remove(tmp_path: Path) -> None:
    clock = FakeClock()
    coord = FakeCoordinator(tmp_path, clock)
    ids = WorkloadIdentities(
        tmp_path / "ids", coord.issue, clock, random.Random(1), ttl_s=TTL, retry_s=10
    )
    mount = await ids.prepare("web", "web-1")
    assert (mount.destination, mount.read_only) == (svid.MOUNT_PATH, True)
    d = Path(mount.source)
    cert = x509.load_pem_x509_certificate((d / svid.CERT_FILE).read_bytes())
    uri = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uri.get_values_for_type(x509.UniformResourceIdentifier) == [
        SpiffeId.workload("web-1").uri
    ]
    assert (d / svid.KEY_FILE).stat().st_mode & 0o777 == 0o400
    assert (d / svid.KEY_FILE).is_symlink()  # into ..data, swapped as one
    first = _serial(d)

    task = asyncio.create_task(ids.run())
    try:
        # renewal at 2/3 of (3600 + 300 back-dated) s minus up to 5 %: between 2405 and 2600 s
        # after notBefore, i.e. 2105..2300 s from now
        clock.advance(2100)
        await _settle()
        assert _serial(d) == first
        clock.advance(210)
        await _settle()
        second = _serial(d)
        assert second != first and coord.calls == ["web-1", "web-1"]
        assert _files(d) == (True, True, 1)  # the old generation is gone

        # the coordinator is away at the next renewal: retried every 10 s, files kept
        coord.down = True
        clock.advance(2400)
        await _settle()
        assert _serial(d) == second and ids.failures == 1
        coord.down = False
        clock.advance(10)
        await _settle()
        assert _serial(d) != second

        # a trust change re-issues at once
        before = _serial(d)
        ids.renew_all()
        await _settle()
        assert _serial(d) != before

        ids.remove("web-1")
        assert _files(d) == (False, False, 0)
        clock.advance(10_000)
        await _settle()
        assert _files(d) == (False, False, 0)  # nothing re-issued for a removed replica
    finally:
        task.cancel()


async def test_unreachable_at_start_starts_anyway(tmp_path: Path) -> None:
    clock = FakeClock()
    coord = FakeCoordinator(tmp_path, clock)
    coord.down = True
    ids = WorkloadIdentities(tmp_path / "ids", coord.issue, clock, random.Random(1))
    mount = await ids.prepare("web", "web-2")
    assert _files(Path(mount.source)) == (True, False, 0)
    assert ids.renew_at("web-2") == clock.now() + ids.retry_s


def rep(node: str, desired: DesiredState = DesiredState.RUNNING) -> Replica:
    return Replica(id="web-1", workload="web", node_id=node, desired=desired)


@pytest.mark.parametrize(
    ("workload", "rid", "replica", "fragment"),
    [
        ("web", "web-1", rep("n1"), None),  # its own replica
        ("web", "web-1", None, "does not exist"),
        ("web", "web-1", rep("n2"), "assigned to node n2, not to node n1"),
        ("web", "web-1", rep(""), "assigned to no node"),
        ("web", "web-1", rep("n1", DesiredState.STOPPED), "being stopped"),
        ("api", "web-1", rep("n1"), "not a replica of workload 'api'"),  # another's identity
    ],
)
def test_issuance_refusal(
    workload: str, rid: str, replica: Replica | None, fragment: str | None
) -> None:
    why = svid.issuance_refusal("n1", workload, rid, replica)
    assert (why is None) if fragment is None else (why is not None and fragment in why)


@pytest.mark.parametrize(
    ("asked", "granted"),
    [(0, 3600), (-5, 3600), (30, 60), (600, 600), (86_400, 86_400), (10**9, 86_400)],
)
def test_ttl_is_clamped(asked: int, granted: int) -> None:
    assert svid.clamp_ttl(asked) == granted
