"""ContainerNetwork contract: the CNI invoker (real plugins, in namespaces) and the fake."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.cni import (
    CNI_PATH,
    CniInvoker,
    ContainerNetwork,
    FakeContainerNetwork,
    PortMapping,
    bridge_conflist,
    collect_garbage,
)
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.testing import Namespaces, run

HAVE_CNI = os.path.exists(os.path.join(CNI_PATH, "bridge"))
ADDR = AddressPlanConfig().plan().addresses(3)  # 10.42.3.0/24, gateway 10.42.3.1


@dataclass
class Rig:
    net: ContainerNetwork
    new_netns: Callable[[str], str]  # a fresh container namespace path
    gone_netns: Callable[[str], None]  # the namespace disappears (container died)
    real: bool


@pytest.fixture(params=["fake", "cni"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "fake":
        fake = FakeContainerNetwork(ADDR)
        yield Rig(fake, lambda n: f"/fake/{n}", fake.gone_netns.add, False)
        return
    if not HAVE_CNI:
        pytest.skip("CNI plugins missing (apt-get install containernetworking-plugins)")
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("dev")
    conf = bridge_conflist(ADDR, data_dir=str(tmp_path / "ipam"))
    inv = CniInvoker(conf, str(tmp_path / "state"), host_argv=("ip", "netns", "exec", dev))

    def new(name: str) -> str:
        return Namespaces.path(ns.create(name))

    def gone(path: str) -> None:
        run(["ip", "netns", "del", os.path.basename(path)])

    yield Rig(inv, new, gone, True)


async def test_add_gives_an_address_of_the_device_subnet(rig: Rig) -> None:
    a = await rig.net.add("c1", rig.new_netns("c1"))
    assert ADDR.owns(a.ip) is None
    assert await rig.net.leases() == {a.ip: "c1"}
    assert a.gateway == "10.42.3.1"
    assert a.prefixlen == 24
    assert await rig.net.attached() == ["c1"]


async def test_two_containers_get_different_addresses(rig: Rig) -> None:
    a = await rig.net.add("c1", rig.new_netns("c1"))
    b = await rig.net.add("c2", rig.new_netns("c2"))
    assert a.ip != b.ip


async def test_add_again_returns_the_same_attachment(rig: Rig) -> None:
    path = rig.new_netns("c1")
    a = await rig.net.add("c1", path)
    assert await rig.net.add("c1", path) == a


async def test_check_and_delete(rig: Rig) -> None:
    path = rig.new_netns("c1")
    await rig.net.add("c1", path)
    await rig.net.check("c1", path)
    await rig.net.delete("c1", path)
    assert await rig.net.attached() == []
    await rig.net.delete("c1", path)  # idempotent
    with pytest.raises(NetworkEdgeError, match="no network attachment"):
        await rig.net.check("c1", path)


async def test_delete_after_the_namespace_is_gone_frees_the_address(rig: Rig) -> None:
    path = rig.new_netns("c1")
    a = await rig.net.add("c1", path)
    rig.gone_netns(path)
    await rig.net.delete("c1", path)
    assert await rig.net.attached() == []
    assert a.ip not in await rig.net.leases()


async def test_failed_add_leaves_nothing(rig: Rig) -> None:
    bad = "/run/netns/clnet-does-not-exist"
    if not rig.real:
        rig.gone_netns(bad)
    with pytest.raises(NetworkEdgeError, match="c1"):
        await rig.net.add("c1", bad)
    assert await rig.net.attached() == []
    assert await rig.net.leases() == {}  # the failed ADD held no lease


BAD_IDS = ["", "a b", "../etc", "x" * 200]


@pytest.mark.parametrize("cid", BAD_IDS)
async def test_bad_container_id_refused(rig: Rig, cid: str) -> None:
    with pytest.raises(NetworkEdgeError, match="container id"):
        await rig.net.add(cid, "/run/netns/whatever")


async def test_port_mapping_accepted(rig: Rig) -> None:
    a = await rig.net.add("c1", rig.new_netns("c1"), [PortMapping(18080, 80)])
    assert a.ip
    await rig.net.delete("c1", "")


async def test_real_interface_has_overlay_mtu_and_no_masquerade(rig: Rig) -> None:
    if not rig.real:
        pytest.skip("the fake has no interfaces")
    path = rig.new_netns("c1")
    await rig.net.add("c1", path)
    link = run(["ip", "-n", os.path.basename(path), "-o", "link", "show", "eth0"])
    assert " mtu 1300 " in link
    dev = path.replace("-c1", "-dev")
    nat = run(["ip", "netns", "exec", os.path.basename(dev), "iptables-save", "-t", "nat"])
    assert "MASQUERADE" not in nat  # ipMasq off: cluster traffic keeps its source


async def test_garbage_of_containers_that_died_is_collected(rig: Rig) -> None:
    keep = await rig.net.add("keep", rig.new_netns("keep"))
    path = rig.new_netns("dead")
    await rig.net.add("dead", path)
    rig.gone_netns(path)  # died while the agent was down
    assert await collect_garbage(rig.net, {"keep"}) == ["dead"]
    assert await rig.net.leases() == {keep.ip: "keep"}
    assert await collect_garbage(rig.net, {"keep"}) == []
