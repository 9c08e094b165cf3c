"""The network message of the agent stream: built by the publisher, read by the agent."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
from pathlib import Path

import pytest

from cloudless.agent.network import AgentNetwork, missing_prerequisite, upstream_resolver
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import CloudlessError
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import NetworkConfigError
from cloudless.network.nebula import NebulaCA
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec
from cloudless.network.state import assign_device, assign_service, release_device, set_endpoints
from cloudless.network.wire import DeviceConfig, NebulaIdentity, network_config
from cloudless.store.memory import MemoryStore

CFG = AddressPlanConfig()
WEB = Service(
    ServiceSpec(ServiceKey("default", "web"), (ServicePort(80),)),
    ipaddress.IPv4Address("10.43.0.1"),
    (Endpoint(ipaddress.IPv4Address("10.42.1.2"), "web-0", "n1"),),
)
LH = {"100.127.255.254": ["192.168.77.1:4242"]}


def test_round_trip() -> None:
    ident = NebulaIdentity(b"ca", b"crt", b"key")
    msg = network_config(CFG, 1, [WEB], nebula=ident, lighthouses=LH, blocklist=["ff"])
    got = DeviceConfig.from_pb(pb.NetworkConfig.FromString(msg.SerializeToString()))
    # slot 1 = overlay 100.64.0.2 + containers 10.42.1.0/24
    assert str(got.addresses.overlay_ip) == "100.64.0.2"
    assert str(got.addresses.container_subnet) == "10.42.1.0/24"
    assert got.services == (WEB,)
    assert got.nebula == ident
    assert got.lighthouses == {"100.127.255.254": ("192.168.77.1:4242",)}
    assert got.blocklist == ("ff",)


def _bad(**kw: object) -> pb.NetworkConfig:
    msg = network_config(CFG, 1, [WEB], nebula=None, lighthouses=LH)
    for k, v in kw.items():
        if k == "vip":
            msg.services[0].vip = str(v)
        elif k == "balance":
            msg.services[0].balance = str(v)
        elif k == "lighthouse":
            msg.lighthouses[0].overlay_ip = str(v)
        else:
            setattr(msg, k, v)
    return msg


BAD = [
    # (changed field, words the refusal must contain)
    ({"slot": -1, "reason": "waiting for an address slot"}, ["network.slot", "waiting"]),
    ({"slot": 256}, ["network.slot: 256 is outside 0..255"]),  # /16 in /24s = 256 slots
    ({"container_cidr": "10.42.0.0/33"}, ["network.container_cidr"]),
    ({"service_cidr": "10.42.0.0/16"}, ["overlaps"]),
    ({"vip": "10.43.0.300"}, ["network.services[0]"]),
    ({"balance": "round-robin"}, ["network.services[0].balance: 'round-robin' is not one of"]),
    ({"lighthouse": "lh"}, ["network.lighthouses[0].overlay_ip"]),
]


@pytest.mark.parametrize(("kw", "words"), BAD)
def test_unusable_messages_are_refused_by_field(kw: dict[str, object], words: list[str]) -> None:
    with pytest.raises(NetworkConfigError) as e:
        DeviceConfig.from_pb(_bad(**kw))
    for w in words:
        assert w in str(e.value)


PREREQ = [
    # (euid, missing tool, missing path, reason words)
    (1000, None, None, "not root"),
    (0, "nebula", None, "`nebula` is not installed"),
    (0, None, "/usr/lib/cni/portmap", "CNI plugin portmap missing"),
    (0, None, "/dev/net/tun", "/dev/net/tun is missing"),
    (0, None, None, None),
]


@pytest.mark.parametrize(("euid", "tool", "path", "words"), PREREQ)
def test_prerequisites(euid: int, tool: str | None, path: str | None, words: str | None) -> None:
    why = missing_prerequisite(
        which=lambda t: None if t == tool else f"/usr/bin/{t}",
        exists=lambda p: p != path,
        euid=euid,
    )
    assert (why is None) if words is None else (words in (why or ""))


def test_upstream_resolver() -> None:
    assert upstream_resolver("# x\nnameserver ::1\nnameserver 192.168.1.1\n") == (
        "192.168.1.1",
        53,
    )
    assert upstream_resolver("search lan\n") is None


async def test_agent_network_degrades_to_the_device_network(tmp_path: Path) -> None:
    net = AgentNetwork(tmp_path, "n1", clock=FakeClock(), prerequisite=lambda: "no nft here")
    assert await net.attach("web-0") is None  # nothing sent yet: off
    net.update(network_config(CFG, 1, [WEB], nebula=None, lighthouses={}))
    assert net.state == "off"
    assert await net.attach("web-0") is None


async def test_publisher_pushes_each_nodes_network(tmp_path: Path) -> None:
    store = MemoryStore(FakeClock())
    plan = CFG.plan()
    pushed: list[list[str]] = []
    ca = NebulaCA(tmp_path / "nebula") if shutil.which("nebula-cert") else None
    pub = NetworkPublisher(
        store, CFG, FakeClock(), lambda ns: pushed.append(list(ns)), ca=ca, lighthouses=LH
    )
    assert pub.config_for("n1").slot == -1  # no slot yet: the agent waits
    await assign_device(store, plan, "n1")
    await assign_device(store, plan, "n2")
    await assign_service(store, plan, WEB.spec)
    await set_endpoints(store, WEB.key, WEB.endpoints, 1)
    assert await pub.refresh() == ["n1", "n2"]
    n1 = DeviceConfig.from_pb(pub.config_for("n1"))
    assert (n1.addresses.slot, [s.key for s in n1.services]) == (0, [WEB.key])
    assert n1.services[0].endpoints == WEB.endpoints
    assert await pub.refresh() == []  # nothing changed, nothing pushed
    if ca is not None:
        assert n1.nebula is not None and b"NEBULA CERTIFICATE" in n1.nebula.cert
        await release_device(store, "n2")  # removed: its certificate is blocklisted
        assert await pub.refresh() == ["n1", "n2"]
        assert len(pub.config_for("n1").blocklist) == 1
    assert pushed[0] == ["n1", "n2"]


async def test_publisher_sends_a_service_change_alone(tmp_path: Path) -> None:
    store = MemoryStore(FakeClock())
    plan = CFG.plan()
    whole: list[list[str]] = []
    alone: list[tuple[pb.NetworkServicesUpdate, list[str]]] = []
    pub = NetworkPublisher(
        store,
        CFG,
        FakeClock(),
        lambda ns: whole.append(list(ns)),
        lighthouses=LH,
        push_services=lambda u, ns: alone.append((u, list(ns))),
    )
    db = ServiceSpec(ServiceKey("default", "db"), (ServicePort(5432),))
    await assign_device(store, plan, "n1")
    await assign_device(store, plan, "n2")
    await assign_service(store, plan, WEB.spec)
    await assign_service(store, plan, db)
    await set_endpoints(store, WEB.key, WEB.endpoints, 1)
    assert await pub.refresh() == ["n1", "n2"]
    assert (whole, alone) == ([["n1", "n2"]], [])  # first messages: whole
    rev = pub.services_revision
    moved = (Endpoint(ipaddress.IPv4Address("10.42.0.9"), "web-0", "n1"),)
    await set_endpoints(store, WEB.key, moved, 1)
    assert await pub.refresh() == ["n1", "n2"]
    assert whole == [["n1", "n2"]]  # nothing else changed: no whole message
    [(update, nodes)] = alone
    assert nodes == ["n1", "n2"]
    # only web, whole, from the table every node was sent
    assert (update.base, update.revision) == (rev, rev + 1) == (rev, pub.services_revision)
    assert [(s.name, [e.ip for e in s.endpoints]) for s in update.upserts] == [
        ("web", ["10.42.0.9"])
    ]
    assert list(update.removed) == []
    # the whole message at the new revision carries the table the change leads to
    n1 = pub.config_for("n1")
    assert n1.services_revision == update.revision
    assert [s.name for s in n1.services] == ["db", "web"]
    # a node joining gets its whole message; the others nothing
    await assign_device(store, plan, "n3")
    assert await pub.refresh() == ["n3"]
    assert whole[-1] == ["n3"] and len(alone) == 1


async def test_agent_network_that_cannot_come_up_says_why_and_fails_attach(
    tmp_path: Path,
) -> None:
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")
    net = AgentNetwork(
        tmp_path,
        "n1",
        clock=FakeClock(),  # the retry waits on it: one attempt in this test
        prerequisite=lambda: None,
        host_netns="cl14-no-such-namespace",
        attach_timeout=0.5,
    )
    task = asyncio.create_task(net.run())
    try:
        net.update(network_config(CFG, 1, [WEB], nebula=None, lighthouses={}))
        for _ in range(100):
            if "failed" in net.reason:
                break
            await asyncio.sleep(0.05)
        assert net.state == "waiting"
        assert "device network failed, retrying in 5s" in net.reason
        with pytest.raises(CloudlessError, match="the device network is not up: device"):
            await net.attach("web-0")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
