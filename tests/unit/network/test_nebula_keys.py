"""A node's own Nebula key: made on the node, checked by the coordinator, signed without the
private half ever leaving (real ``nebula-cert`` where installed), and certificates re-issued
at 2/3 of their life."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.certs import CERTS
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import NebulaCA
from cloudless.network.nebula_config import renewal_due
from cloudless.network.nebula_keys import (
    PRIVATE_BANNER,
    PUBLIC_BANNER,
    NodeKey,
    make_keypair,
    pem,
    public_key_problem,
)
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device
from cloudless.network.wire import DeviceConfig
from cloudless.scheduler.testing import node
from cloudless.store.memory import MemoryStore

KEY32 = bytes(range(1, 33))
NEEDS_CERT = pytest.mark.skipif(
    shutil.which("nebula-cert") is None, reason="nebula-cert is not installed (Debian nebula)"
)

BAD_KEYS = [
    # (text, words in the reason)
    ("", "not a PEM block"),
    ("AAAA", "not a PEM block"),
    (pem(PRIVATE_BANNER, KEY32), "a NEBULA X25519 PRIVATE KEY block"),
    (pem("NEBULA ED25519 PUBLIC KEY", KEY32), "a NEBULA ED25519 PUBLIC KEY block"),
    (pem(PUBLIC_BANNER, KEY32[:31]), "31 bytes"),  # one short
    (pem(PUBLIC_BANNER, KEY32 + b"x"), "33 bytes"),
    (pem(PUBLIC_BANNER, bytes(32)), "all zeros"),
    (pem(PUBLIC_BANNER, KEY32).replace("AQID", "AQ*D"), "not a PEM block"),  # '*' not base64
    (pem(PUBLIC_BANNER, KEY32).replace("AQID", "AQI"), "not valid base64"),  # bad padding
    ("k" * 100_000, "100000 characters"),
    (pem(PUBLIC_BANNER, KEY32) * 2, "one short PEM block"),  # two blocks: 250 characters
]


@pytest.mark.parametrize(("text", "words"), BAD_KEYS)
def test_public_key_refused_with_the_reason(text: str, words: str) -> None:
    got = public_key_problem(text)
    assert got is not None and words in got, got


def test_keypair_is_nebulas_format() -> None:
    private, public = make_keypair()
    assert public_key_problem(public) is None
    assert private.startswith(f"-----BEGIN {PRIVATE_BANNER}-----\n")
    assert len(private.splitlines()[1]) == 44  # 32 bytes in base64, one line as Go writes it


def test_node_key_is_made_once_and_kept(tmp_path: Path) -> None:
    k = NodeKey(tmp_path / "nebula")
    pub = k.ensure()
    assert k.ensure() == pub and k.pub.read_text() == pub
    assert k.key.stat().st_mode & 0o777 == 0o600
    k.pub.write_text("garbage")  # the public half follows from the private one
    assert k.ensure() == pub and k.pub.read_text() == pub
    k.key.write_text("not a key")
    with pytest.raises(NetworkEdgeError, match=r"node\.key: not a PEM block"):
        k.ensure()


@NEEDS_CERT
async def test_nebula_cert_signs_our_public_key(tmp_path: Path) -> None:
    """The key made with ``cryptography`` is the one ``nebula-cert`` puts in the certificate
    (the public key it prints is the X25519 of our private half)."""
    import base64

    ca = NebulaCA(tmp_path / "ca")
    await ca.ensure()
    _, public = make_keypair()
    plan = AddressPlanConfig().plan()
    crt = await ca.sign("n1", plan.addresses(0), ["cloudless"], tmp_path / "n1", public)
    assert not (tmp_path / "n1" / "host.key").exists()  # no key made or kept here
    out = await asyncio.to_thread(
        lambda: (
            subprocess.run(
                ["nebula-cert", "print", "-json", "-path", str(crt)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    )
    details = json.loads(out)["details"]
    raw = base64.b64decode(public.splitlines()[1])
    assert details["publicKey"] == raw.hex()
    assert details["ips"] == ["100.64.0.1/10"]
    with pytest.raises(NetworkEdgeError, match="n2: Nebula public key: the key is all zeros"):
        await ca.sign("n2", plan.addresses(1), [], tmp_path / "n2", pem(PUBLIC_BANNER, bytes(32)))


@pytest.mark.parametrize(
    ("issued_at", "hours", "now", "due"),
    [
        # 2/3 of 8760 h = 5840 h = 21,024,000 s
        (0.0, 8760, 21_023_999.0, False),
        (0.0, 8760, 21_024_000.0, True),
        (100.0, 3, 100.0 + 7199, False),  # 2/3 of 3 h = 7200 s
        (100.0, 3, 100.0 + 7200, True),
    ],
)
def test_renewal_due(issued_at: float, hours: int, now: float, due: bool) -> None:
    assert renewal_due(issued_at, hours, now) is due


@NEEDS_CERT
async def test_publisher_signs_the_nodes_key_and_renews(tmp_path: Path) -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    cfg = AddressPlanConfig()
    from cloudless.coordinator.state.cluster import ClusterState

    state = ClusterState(store)
    _, pub = make_keypair()
    await state.nodes.put("n1", node("n1", nebula_public_key=pub))
    await state.nodes.put("n2", node("n2"))  # an agent that sent no key
    await assign_device(store, cfg.plan(), "n1")
    await assign_device(store, cfg.plan(), "n2")
    pushed: list[list[str]] = []
    lh = {"100.127.255.254": ["192.168.77.1:4242"]}
    pub_ = NetworkPublisher(
        store,
        cfg,
        clock,
        lambda ns: pushed.append(list(ns)),
        ca=NebulaCA(tmp_path / "nebula"),
        lighthouses=lh,
        cert_hours=3,
    )
    assert await pub_.refresh() == ["n1", "n2"]
    n1 = DeviceConfig.from_pb(pub_.config_for("n1"))
    assert n1.nebula is not None and n1.nebula.key == b""  # the key stays on the node
    assert b"NEBULA CERTIFICATE" in n1.nebula.cert
    n2 = DeviceConfig.from_pb(pub_.config_for("n2"))
    assert n2.nebula is not None and b"NEBULA X25519 PRIVATE KEY" in n2.nebula.key

    clock.advance(7199)  # 2/3 of 3 h is 7200 s: not yet
    assert await pub_.refresh() == []
    clock.advance(1)
    # both re-issued; n2 with a new key made here, so its message changes at once (n1's
    # certificate for the same key differs once nebula-cert's wall clock has moved a second)
    assert "n2" in await pub_.refresh()
    recs = {r.name: r.value for r in (await CERTS.bind(store).list()).records}
    assert {n: (r.issued_at, r.hours) for n, r in recs.items()} == {
        n: (clock.now(), 3) for n in ("n1", "n2")
    }
    assert recs["n1"].for_key == pub and recs["n2"].for_key == ""

    # n1 lost its key and made a new one: the next hello records it, a new cert follows
    _, pub2 = make_keypair()
    await state.nodes.put("n1", node("n1", nebula_public_key=pub2))
    assert await pub_.refresh() == ["n1"]


@NEEDS_CERT
async def test_a_new_leader_reissues_nothing_and_keeps_the_blocklist(tmp_path: Path) -> None:
    """Certificates live in the store: a second coordinator (the same Nebula CA from the join
    answer, its own disk) leading after the first sends every node the same certificate and
    still blocklists a node removed under the first."""
    from cloudless.coordinator.state.cluster import ClusterState
    from cloudless.network.state import release_device

    clock = FakeClock()
    store = MemoryStore(clock)
    cfg = AddressPlanConfig()
    state = ClusterState(store)
    for n in ("n1", "n2"):
        await state.nodes.put(n, node(n, nebula_public_key=make_keypair()[1]))
        await assign_device(store, cfg.plan(), n)
    lh = {"100.127.255.254": ["192.168.77.1:4242"]}
    first_ca = NebulaCA(tmp_path / "c1" / "nebula")
    first = NetworkPublisher(store, cfg, clock, lambda ns: None, ca=first_ca, lighthouses=lh)
    await first.refresh()
    await release_device(store, "n2")  # n2 removed while c1 leads
    await first.refresh()
    assert len(first.config_for("n1").blocklist) == 1

    second_dir = tmp_path / "c2" / "nebula"
    second_dir.mkdir(parents=True)
    for name in ("ca.crt", "ca.key"):  # what the join answer carries
        (second_dir / name).write_bytes((first_ca.dir / name).read_bytes())
    second = NetworkPublisher(
        store, cfg, clock, lambda ns: None, ca=NebulaCA(second_dir, create=False), lighthouses=lh
    )
    await second.refresh()
    assert second.config_for("n1") == first.config_for("n1")  # same certificate, same blocklist
    assert not (second_dir / "issued").exists()  # nothing signed again
