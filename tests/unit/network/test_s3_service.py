"""The S3 API as a cluster service: which registrations are endpoints (table), and the
controller keeping ``s3.system`` in the store from them (one MemoryStore, a fake clock)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import FakeClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.controller import NetworkController
from cloudless.network.dns import DnsIndex
from cloudless.network.s3_service import s3_endpoints
from cloudless.network.services import S3_SERVICE
from cloudless.network.state import list_services
from cloudless.objectstore.members import NODES, StorageNode
from cloudless.scheduler.testing import node
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

PLAN = AddressPlanConfig().plan()
# slots: a = 0 (bridge 10.42.0.1), b = 1 (10.42.1.1), c = 2 (10.42.2.1); "x" holds none
DEVICES = {n: PLAN.addresses(k) for n, k in (("a", 0), ("b", 1), ("c", 2))}


def reg(name: str, gateway: str = "", capacity: int = 10**9) -> StorageNode:
    return StorageNode(name, "z", capacity, "https://h:3901", "http://h:3900", 1, gateway)


CASES = [
    # (registration, seconds its beat stood still, unreachable, endpoint ip or why not)
    (reg("a", "10.42.0.1:3900"), 0.0, None, "10.42.0.1"),
    (reg("b", "10.42.1.1:3900", capacity=0), 19.0, None, "10.42.1.1"),  # a gateway; 19 < 20
    (reg("a", "10.42.0.1:3900"), 20.0, None, "has not beaten for 20 s (stale after 20 s)"),
    (reg("a"), 0.0, None, "is not serving on the device's container network"),
    (reg("x", "10.42.9.1:3900"), 0.0, None, "its device has no address slot"),
    (reg("a", "10.42.1.1:3900"), 0.0, None, "is not its device's bridge address 10.42.0.1"),
    (reg("a", "10.42.0.7:3900"), 0.0, None, "is not its device's bridge address 10.42.0.1"),
    (reg("a", "10.42.0.1:9000"), 0.0, None, "listens on port 9000; the service's port is 3900"),
    (reg("a", "[::1]:3900"), 0.0, None, "is not <IPv4>:<port>"),
    (reg("a", "10.42.0.1:3900"), 0.0, {"a": "no lighthouse tunnel for 31 s"}, "unreachable: no"),
]


@pytest.mark.parametrize(("node_reg", "silent", "cut", "want"), CASES)
def test_endpoint_or_why_not(
    node_reg: StorageNode, silent: float, cut: dict[str, str] | None, want: str
) -> None:
    es = s3_endpoints({node_reg.name: node_reg}, {node_reg.name: silent}, DEVICES, cut)
    assert es.key == S3_SERVICE and es.total == 1
    if want.startswith("10."):
        assert [(str(e.ip), e.device_id) for e in es.endpoints] == [(want, node_reg.name)]
        assert es.ignored == ()
    else:
        assert es.endpoints == ()
        [why] = es.ignored
        assert why.startswith(f"{node_reg.name}: ") and want in why, why


def test_every_serving_device_sorted_by_address() -> None:
    nodes = {
        "c": reg("c", "10.42.2.1:3900"),
        "a": reg("a", "10.42.0.1:3900"),
        "b": reg("b", capacity=0),  # a gateway without container networking
    }
    es = s3_endpoints(nodes, {}, DEVICES)
    assert [str(e.ip) for e in es.endpoints] == ["10.42.0.1", "10.42.2.1"]
    assert (es.total, len(es.ignored)) == (3, 1)


def test_s3_cloudless_answers_the_vip() -> None:
    from dnslib import DNSRecord

    from cloudless.network.state import EndpointRecord, PortRecord, ServiceRecord

    rec = ServiceRecord(
        "system", "s3", "10.43.0.9", (PortRecord(3900, "tcp", "s3"),),
        endpoints=(EndpointRecord("10.42.0.1", "s3", "a"),), total=1,
    )  # fmt: skip
    index = DnsIndex([rec.service()])
    for name in ("s3.cloudless", "s3.system.cloudless"):
        r = index.answer(DNSRecord.question(name, "A"), "default")
        assert r is not None and [str(rr.rdata) for rr in r.rr] == ["10.43.0.9"], name
    r = index.answer(DNSRecord.question("s3", "A"), "default")  # s3.default.cloudless: none
    assert r is not None and r.header.rcode == 3


async def test_controller_keeps_the_s3_service() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    for n in ("a", "b", "c"):
        await state.nodes.put(n, node(n))
    ctl = NetworkController(state, PLAN, clock, s3_stale_s=20.0)
    await ctl.reconcile_once(NO_FENCE)  # slots a=0, b=1, c=2; no registration: no service
    assert await list_services(store) == []

    regs = NODES.bind(store)
    await regs.put("a", reg("a", "10.42.0.1:3900"))  # storage node
    await regs.put("c", reg("c", "10.42.2.1:3900", capacity=0))  # a gateway
    await regs.put("b", reg("b"))  # S3 not serving yet
    await store.put(NODES.prefix + "z", b"{not a registration")  # named, not an endpoint
    await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert (svc.namespace, svc.name, [p.port for p in svc.ports]) == ("system", "s3", [3900])
    assert [(e.ip, e.device_id) for e in svc.endpoints] == [("10.42.0.1", "a"), ("10.42.2.1", "c")]
    assert svc.total == 3 and any(p.startswith("service s3.system: b: ") for p in ctl.problems)
    assert any("a registration does not decode" in p for p in ctl.problems), ctl.problems
    await store.delete(NODES.prefix + "z")
    vip = svc.vip

    # a beats on, c stops (its agent died): c drops out once its beat stood still 20 s
    for _ in range(4):
        clock.advance(6.0)
        a = (await regs.get("a")).value  # type: ignore[union-attr]
        await regs.put("a", replace(a, beat=a.beat + 1))
        await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert [(e.ip, e.device_id) for e in svc.endpoints] == [("10.42.0.1", "a")]
    assert svc.vip == vip  # the VIP never changes
    assert any("c: its registration has not beaten for 24 s" in p for p in ctl.problems)

    # c comes back: an endpoint again at its next beat
    await regs.put("c", replace(reg("c", "10.42.2.1:3900", capacity=0), beat=2))
    await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert [e.device_id for e in svc.endpoints] == ["a", "c"]

    # a stops serving S3 cleanly (its registration says so): out at once
    a = (await regs.get("a")).value  # type: ignore[union-attr]
    await regs.put("a", replace(a, s3_gateway=""))
    await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert [e.device_id for e in svc.endpoints] == ["c"]

    # no object store left: the service and its VIP go
    for n in ("a", "b", "c"):
        await regs.delete(n)
    p = await ctl.reconcile_once(NO_FENCE)
    assert p.delete == (S3_SERVICE,) and await list_services(store) == []


def test_describe_service_names_the_alias() -> None:
    from cloudless.network.state import EndpointRecord, PortRecord, ServiceRecord
    from cloudless.network.views import service_detail

    rec = ServiceRecord(
        "system", "s3", "10.43.0.9", (PortRecord(3900, "tcp", "s3"),),
        endpoints=(EndpointRecord("10.42.0.1", "s3", "a"),), total=2,
    )  # fmt: skip
    v = service_detail(rec, {"a": "pi-kitchen"})
    assert v["names"][0] == "s3.system.cloudless" and v["names"][-1] == "s3.cloudless"
    assert v["endpoints"][0]["node_name"] == "pi-kitchen"
