"""Network records in the store: slots and VIPs stay unique under concurrent requests."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import NotFound
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import AddressExhausted, VipConflict
from cloudless.network.services import Endpoint, ServiceKey, ServicePort, ServiceSpec
from cloudless.network.state import (
    assign_device,
    assign_service,
    delete_service,
    device_slots,
    list_services,
    release_device,
    set_endpoints,
)
from cloudless.store.memory import MemoryStore

PLAN = AddressPlanConfig(container_cidr="10.42.0.0/20").plan()  # 16 slots


def spec(name: str, ns: str = "default") -> ServiceSpec:
    return ServiceSpec(ServiceKey(ns, name), (ServicePort(80),))


async def test_concurrent_enrollments_get_distinct_stable_slots() -> None:
    store = MemoryStore(FakeClock())
    got = await asyncio.gather(*(assign_device(store, PLAN, f"n{i}") for i in range(12)))
    assert sorted(a.slot for a in got) == list(range(12))
    again = await assign_device(store, PLAN, "n5")
    assert again == got[5]  # stable for the device's life
    assert len(await device_slots(store)) == 12


async def test_release_frees_the_slot_for_the_next_device() -> None:
    store = MemoryStore(FakeClock())
    a = await assign_device(store, PLAN, "a")
    await assign_device(store, PLAN, "b")
    assert await release_device(store, "a") is True
    assert await release_device(store, "a") is False
    assert (await assign_device(store, PLAN, "c")).slot == a.slot


async def test_exhausted_slots_refused() -> None:
    store = MemoryStore(FakeClock())
    small = AddressPlanConfig(container_cidr="10.42.0.0/23").plan()  # 2 slots
    await assign_device(store, small, "a")
    await assign_device(store, small, "b")
    with pytest.raises(AddressExhausted):
        await assign_device(store, small, "c")


async def test_concurrent_services_get_distinct_stable_vips() -> None:
    store = MemoryStore(FakeClock())
    recs = await asyncio.gather(*(assign_service(store, PLAN, spec(f"s{i}")) for i in range(10)))
    assert len({r.vip for r in recs}) == 10
    again = await assign_service(store, PLAN, spec("s3"))
    assert again.vip == recs[3].vip


async def test_two_services_cannot_claim_one_vip() -> None:
    store = MemoryStore(FakeClock())
    await assign_service(store, PLAN, spec("a"), requested_vip="10.43.0.50")
    with pytest.raises(VipConflict, match=r"already the VIP of service a\.default"):
        await assign_service(store, PLAN, spec("b"), requested_vip="10.43.0.50")
    assert [s.name for s in await list_services(store)] == ["a"]  # nothing half-written


async def test_endpoints_and_delete() -> None:
    import ipaddress

    store = MemoryStore(FakeClock())
    rec = await assign_service(store, PLAN, spec("web"))
    ep = Endpoint(ipaddress.IPv4Address("10.42.1.5"), "web-0", "n1")
    out = await set_endpoints(store, ServiceKey("default", "web"), (ep,), total=2)
    assert (out.vip, out.total, [e.ip for e in out.endpoints]) == (rec.vip, 2, ["10.42.1.5"])
    svc = out.service()
    assert str(svc.vip) == rec.vip and svc.endpoints[0].replica == "web-0"
    # re-applying the spec keeps VIP and endpoints
    again = await assign_service(store, PLAN, spec("web"))
    assert (again.vip, again.endpoints) == (rec.vip, out.endpoints)
    assert await delete_service(store, ServiceKey("default", "web")) is True
    assert await list_services(store) == []
    # the VIP is free again
    assert (await assign_service(store, PLAN, spec("other"))).vip == rec.vip
    with pytest.raises(NotFound):
        await set_endpoints(store, ServiceKey("default", "web"), (), total=0)
