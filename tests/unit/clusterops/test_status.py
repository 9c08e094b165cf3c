"""``ca status`` roles of the trusted roots in each part of a rotation (``status.ca_status``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.clusterops.status import ca_status
from cloudless.lib.clock import FakeClock
from cloudless.security.bundle import certificate_digest
from cloudless.security.ca import CertificateAuthority, new_root


@pytest.fixture
def roots(tmp_path: Path) -> tuple[CertificateAuthority, str, str]:
    clock = FakeClock()
    ca = CertificateAuthority.init(tmp_path / "ca", clock=clock, root_key_size=2048)
    _, other = new_root(ca.trust_domain, clock.now(), 2048)
    from cryptography.hazmat.primitives import serialization

    ca.add_trusted_root(other.public_bytes(serialization.Encoding.PEM))
    return ca, ca.digest, certificate_digest(other)


# (next root given, abandoned given) -> the other root's role, a fragment of the phase text
CASES = [
    (True, False, "next", "begun"),  # trust phase: the new root is next
    (False, False, "previous", "switched"),  # after a switch: the old root is previous
    (False, True, "abandoned", "aborting"),  # revert/untrust: the new root is abandoned
]


@pytest.mark.parametrize(("nxt", "abandoned", "role", "phase"), CASES)
def test_roles(
    roots: tuple[CertificateAuthority, str, str],
    nxt: bool,
    abandoned: bool,
    role: str,
    phase: str,
) -> None:
    ca, issuing, other = roots
    doc = ca_status(
        roots=ca.trust_bundle.roots,
        issuing=issuing,
        next_digest=other if nxt else None,
        own=None,
        users=[],
        now=0.0,
        abandoned=other if abandoned else None,
    )
    got = {r["digest"]: r["role"] for r in doc["roots"]}
    assert got == {issuing: "issuing", other: role}
    assert phase in doc["rotation"]
