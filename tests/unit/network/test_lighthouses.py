"""Every coordinator a lighthouse: overlay addresses for lighthouses (table), claimed in the
store under the coordinator's name, handed to devices by the publisher, released with the
coordinator; a joining coordinator receives the Nebula CA and never makes its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.coordinator.wiring.joining import JoinFailed, ca_material, write_ca
from cloudless.lib.clock import FakeClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import AddressExhausted, NetworkEdgeError
from cloudless.network.nebula import NebulaCA
from cloudless.network.observer import (
    claim_lighthouse,
    registered_lighthouses,
    release_lighthouse,
)
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device
from cloudless.network.wire import DeviceConfig
from cloudless.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("overlay", "container", "want"),
    [
        # 100.64.0.0/10: 256 slots at the bottom, 7 lighthouses from 100.127.255.254 down
        ("100.64.0.0/10", "10.42.0.0/16", [f"100.127.255.{254 - i}" for i in range(7)]),
        # /29: addresses .1-.6, slots min(256, 8 - 3) = 5 -> .1-.5; only .6 is left
        ("100.64.0.0/29", "10.42.0.0/16", ["100.64.0.6"]),
        # /28 with 4 slots (/22 split in /24s): .1-.4 slots; .14 down to .8 (7 of them)
        ("100.64.0.0/28", "10.42.0.0/22", [f"100.64.0.{14 - i}" for i in range(7)]),
    ],
)
def test_lighthouse_ips(overlay: str, container: str, want: list[str]) -> None:
    plan = AddressPlanConfig(overlay_cidr=overlay, container_cidr=container).plan()
    got = [str(ip) for ip in plan.lighthouse_ips()]
    assert got == want
    slots = {str(plan.addresses(k).overlay_ip) for k in range(plan.slots)}
    assert not slots & set(got)
    assert got[0] == str(plan.lighthouse_ip)  # the first coordinator's is the old single one


async def test_claims_are_unique_stable_and_released() -> None:
    store = MemoryStore(FakeClock())
    plan = AddressPlanConfig().plan()
    a = await claim_lighthouse(store, plan, "c1", "192.168.1.1:4242")
    b = await claim_lighthouse(store, plan, "c2", "192.168.1.2:4242")
    assert (a, b) == ("100.127.255.254", "100.127.255.253")
    assert await claim_lighthouse(store, plan, "c1", "192.168.1.1:4242") == a  # restarted
    assert await claim_lighthouse(store, plan, "c1", "10.0.0.1:4243") == a  # moved
    assert await registered_lighthouses(store) == {
        a: ("10.0.0.1:4243",),
        b: ("192.168.1.2:4242",),
    }
    assert await release_lighthouse(store, "c1") == [a]
    assert await claim_lighthouse(store, plan, "c3", "192.168.1.3:4242") == a  # freed, reused


async def test_claims_run_out_with_a_reason() -> None:
    store = MemoryStore(FakeClock())
    plan = AddressPlanConfig(overlay_cidr="100.64.0.0/29").plan()  # one lighthouse address
    await claim_lighthouse(store, plan, "c1", "192.168.1.1:4242")
    with pytest.raises(AddressExhausted, match="cloudless coordinator remove"):
        await claim_lighthouse(store, plan, "c2", "192.168.1.2:4242")


async def test_concurrent_claims_never_share_an_address() -> None:
    import asyncio

    store = MemoryStore(FakeClock())
    plan = AddressPlanConfig().plan()
    got = await asyncio.gather(
        *(claim_lighthouse(store, plan, f"c{i}", f"192.168.1.{i}:4242") for i in range(5))
    )
    assert len(set(got)) == 5


async def test_publisher_hands_devices_every_registered_lighthouse() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    cfg = AddressPlanConfig()
    static = {str(cfg.plan().lighthouse_ip): ["192.168.1.1:4242"]}
    pub = NetworkPublisher(store, cfg, clock, lambda ns: None, lighthouses=static)
    await assign_device(store, cfg.plan(), "n1")
    await pub.refresh()
    assert DeviceConfig.from_pb(pub.config_for("n1")).lighthouses == {
        "100.127.255.254": ("192.168.1.1:4242",)
    }  # none registered: the static one
    await claim_lighthouse(store, cfg.plan(), "c1", "192.168.1.1:4242")
    await claim_lighthouse(store, cfg.plan(), "c2", "192.168.1.2:4242")
    assert await pub.refresh() == ["n1"]  # a second lighthouse: the device is re-pushed
    assert DeviceConfig.from_pb(pub.config_for("n1")).lighthouses == {
        "100.127.255.254": ("192.168.1.1:4242",),
        "100.127.255.253": ("192.168.1.2:4242",),
    }


def test_join_answer_carries_the_nebula_ca(tmp_path: Path) -> None:
    src, dst = tmp_path / "ca", tmp_path / "joined"
    src.mkdir()
    for name in ("ca.crt", "ca.key", "ca.json"):
        (src / name).write_text(f"x509 {name}")
    assert "nebula/ca.key" not in ca_material(src)  # no Nebula CA yet: none sent
    (src / "nebula").mkdir()
    (src / "nebula" / "ca.crt").write_text("NEBULA CERTIFICATE")
    (src / "nebula" / "ca.key").write_text("NEBULA ED25519 PRIVATE KEY")
    (src / "nebula" / "issued").mkdir()  # issued device certificates stay behind
    files = ca_material(src)
    assert set(files) == {"ca.crt", "ca.key", "ca.json", "nebula/ca.crt", "nebula/ca.key"}
    write_ca(dst, files)
    assert (dst / "nebula" / "ca.key").read_text() == "NEBULA ED25519 PRIVATE KEY"
    assert (dst / "nebula" / "ca.key").stat().st_mode & 0o777 == 0o600
    half = {k: v for k, v in files.items() if k != "nebula/ca.key"}
    with pytest.raises(JoinFailed, match="not the whole Nebula CA"):
        write_ca(tmp_path / "half", half)


async def test_a_joined_coordinator_never_makes_a_nebula_ca(tmp_path: Path) -> None:
    ca = NebulaCA(tmp_path / "nebula", create=False)
    with pytest.raises(NetworkEdgeError, match=r"copy ca\.crt and ca\.key from"):
        await ca.ensure()
    assert not (tmp_path / "nebula" / "ca.key").exists()
