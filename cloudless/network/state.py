"""The network's records in the store, and the transactions that keep them unique.

Tables (under ``/cloudless/network/``)::

    network-slots/<k>            SlotOwner: which device holds address slot k
    network-devices/<node-id>    DeviceNet: the slot (and the addresses it means) of a device
    network-vips/<ip>            VipOwner: which service holds a VIP
    network-services/<ns>.<name> ServiceRecord: ports, VIP and current endpoints

Network policies live in ``/cloudless/netpolicies/<name>`` (``ClusterState.netpolicies``,
the validated document); ``stored_policies`` reads them back.

Uniqueness lives in the keys: a slot or a VIP is taken by creating its owner record and the
device/service record in one transaction that requires both absent, so two coordinators (or
two requests) can never hand out one slot or one VIP; the loser re-decides with the pure
deciders (``addressing.allocate``, ``services.allocate_vip``) on a fresh listing. Releasing
deletes both records in one transaction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import Conflict, NotFound, ValidationError
from cloudless.network.addressing import AddressPlan, DeviceAddresses, allocate
from cloudless.network.netpolicy import NetworkPolicy, parse_policy
from cloudless.network.services import (
    Endpoint,
    Service,
    ServiceKey,
    ServicePort,
    ServiceSpec,
    allocate_vip,
    validate_service,
)
from cloudless.store.codec import DataclassCodec
from cloudless.store.fence import NO_FENCE, Fence, fenced_txn
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import TableSpec
from cloudless.store.types import Compare

ATTEMPTS = 16


@dataclass(frozen=True)
class SlotOwner:
    node_id: str


@dataclass(frozen=True)
class DeviceNet:
    slot: int
    overlay_ip: str
    container_subnet: str


@dataclass(frozen=True)
class VipOwner:
    service: str  # "<name>.<namespace>"


@dataclass(frozen=True)
class PortRecord:
    port: int
    protocol: str = "tcp"
    name: str = ""


@dataclass(frozen=True)
class EndpointRecord:
    ip: str
    replica: str
    device_id: str


@dataclass(frozen=True)
class ServiceRecord:
    namespace: str
    name: str
    vip: str
    ports: tuple[PortRecord, ...]
    stateful: bool = False
    balance: str = "random"
    endpoints: tuple[EndpointRecord, ...] = ()
    total: int = 0  # replicas, ready or not

    def service(self) -> Service:
        spec = ServiceSpec(
            ServiceKey(self.namespace, self.name),
            tuple(ServicePort(p.port, p.protocol, p.name) for p in self.ports),
            self.stateful,
            self.balance,
        )
        eps = tuple(
            Endpoint(ipaddress.IPv4Address(e.ip), e.replica, e.device_id) for e in self.endpoints
        )
        return Service(spec, ipaddress.IPv4Address(self.vip), eps)


SLOTS = TableSpec("network-slots", DataclassCodec(SlotOwner, kind="network_slot"))
DEVICES = TableSpec("network-devices", DataclassCodec(DeviceNet, kind="network_device"))
VIPS = TableSpec("network-vips", DataclassCodec(VipOwner, kind="network_vip"))
SERVICES = TableSpec("network-services", DataclassCodec(ServiceRecord, kind="network_service"))


def service_name(key: ServiceKey) -> str:
    return f"{key.namespace}.{key.name}"


async def assign_device(
    store: Store, plan: AddressPlan, node_id: str, *, fence: Fence = NO_FENCE
) -> DeviceAddresses:
    """The device's addresses: the ones it holds, else a newly taken slot (see module)."""
    slots, devices = SLOTS.bind(store), DEVICES.bind(store)
    for _ in range(ATTEMPTS):
        mine = await devices.get(node_id)
        if mine is not None:
            return plan.addresses(mine.value.slot)
        listing = await slots.list()
        held = {r.value.node_id: int(r.name) for r in listing.records}
        a = allocate(plan, held, node_id)
        rec = DeviceNet(a.slot, str(a.overlay_ip), str(a.container_subnet))
        res = await fenced_txn(
            store,
            fence,
            [Compare.absent(slots.key(str(a.slot))), Compare.absent(devices.key(node_id))],
            [slots.put_op(str(a.slot), SlotOwner(node_id)), devices.put_op(node_id, rec)],
        )
        if res.succeeded:
            return a
    raise Conflict(f"could not take an address slot for {node_id}: contention; retry")


async def release_device(store: Store, node_id: str, *, fence: Fence = NO_FENCE) -> bool:
    """Free the device's slot (node removed). False when it held none."""
    slots, devices = SLOTS.bind(store), DEVICES.bind(store)
    mine = await devices.get(node_id)
    if mine is None:
        return False
    res = await fenced_txn(
        store,
        fence,
        [devices.unchanged(node_id, mine.mod_revision)],
        [slots.delete_op(str(mine.value.slot)), devices.delete_op(node_id)],
    )
    return res.succeeded


async def list_devices(store: Store) -> dict[str, DeviceNet]:
    return {r.name: r.value for r in (await DEVICES.bind(store).list()).records}


async def get_service(store: Store, key: ServiceKey) -> ServiceRecord | None:
    rec = await SERVICES.bind(store).get(service_name(key))
    return rec.value if rec is not None else None


async def device_slots(store: Store) -> dict[str, int]:
    return {r.name: r.value.slot for r in (await DEVICES.bind(store).list()).records}


async def assign_service(
    store: Store,
    plan: AddressPlan,
    spec: ServiceSpec,
    requested_vip: str | None = None,
    *,
    fence: Fence = NO_FENCE,
) -> ServiceRecord:
    """Create or update the service's record, keeping its VIP (see module)."""
    validate_service(spec)
    vips, services = VIPS.bind(store), SERVICES.bind(store)
    name = service_name(spec.key)
    ports = tuple(PortRecord(p.port, p.protocol, p.name) for p in spec.ports)
    for _ in range(ATTEMPTS):
        current = await services.get(name)
        held = {
            ServiceKey(r.value.namespace, r.value.name): ipaddress.IPv4Address(r.value.vip)
            for r in (await services.list()).records
        }
        vip = allocate_vip(plan.services, held, spec.key, requested_vip)
        if current is not None:
            rec = ServiceRecord(
                spec.key.namespace,
                spec.key.name,
                str(vip),
                ports,
                spec.stateful,
                spec.balance,
                current.value.endpoints,
                current.value.total,
            )
            if await services.cas(name, rec, expect=current.mod_revision, fence=fence) is not None:
                return rec
            continue
        rec = ServiceRecord(
            spec.key.namespace, spec.key.name, str(vip), ports, spec.stateful, spec.balance
        )
        res = await fenced_txn(
            store,
            fence,
            [Compare.absent(vips.key(str(vip))), Compare.absent(services.key(name))],
            [vips.put_op(str(vip), VipOwner(str(spec.key))), services.put_op(name, rec)],
        )
        if res.succeeded:
            return rec
    raise Conflict(f"could not take a VIP for service {spec.key}: contention; retry")


async def set_endpoints(
    store: Store,
    key: ServiceKey,
    endpoints: tuple[Endpoint, ...],
    total: int,
    *,
    fence: Fence = NO_FENCE,
) -> ServiceRecord:
    eps = tuple(EndpointRecord(str(e.ip), e.replica, e.device_id) for e in endpoints)

    def change(cur: ServiceRecord | None) -> ServiceRecord | None:
        if cur is None:
            raise NotFound(f"service {key} does not exist")
        if cur.endpoints == eps and cur.total == total:
            return None
        return ServiceRecord(
            cur.namespace, cur.name, cur.vip, cur.ports, cur.stateful, cur.balance, eps, total
        )

    rec = await SERVICES.bind(store).update(service_name(key), change, fence=fence)
    assert rec is not None
    return rec.value


async def delete_service(store: Store, key: ServiceKey, *, fence: Fence = NO_FENCE) -> bool:
    vips, services = VIPS.bind(store), SERVICES.bind(store)
    name = service_name(key)
    cur = await services.get(name)
    if cur is None:
        return False
    res = await fenced_txn(
        store,
        fence,
        [services.unchanged(name, cur.mod_revision)],
        [vips.delete_op(cur.value.vip), services.delete_op(name)],
    )
    return res.succeeded


async def list_services(store: Store) -> list[ServiceRecord]:
    return sorted(
        (r.value for r in (await SERVICES.bind(store).list()).records),
        key=lambda s: (s.namespace, s.name),
    )


def service_view(s: ServiceRecord) -> dict[str, object]:
    """A service as the user API shows it."""
    return {
        "name": s.name,
        "namespace": s.namespace,
        "dns": f"{s.name}.{s.namespace}.cloudless",
        "vip": s.vip,
        "ports": [f"{p.port}/{p.protocol}" for p in s.ports],
        "endpoints": [{"ip": e.ip, "replica": e.replica, "node": e.device_id} for e in s.endpoints],
        "ready": len(s.endpoints),
        "total": s.total,
    }


SERVICE_HEADERS = ["NAME", "NAMESPACE", "VIP", "PORTS", "ENDPOINTS"]


def service_row(v: dict[str, object]) -> list[str]:
    """One ``cloudless get services`` row from a ``service_view``."""
    ports = v.get("ports") or []
    assert isinstance(ports, list)
    return [
        str(v.get("name", "")),
        str(v.get("namespace", "")),
        str(v.get("vip", "")),
        ",".join(str(p) for p in ports),
        f"{v.get('ready', 0)}/{v.get('total', 0)}",
    ]


async def stored_policies(table: Table[dict[str, Any]]) -> tuple[list[NetworkPolicy], list[str]]:
    """Every stored policy, and a problem per record that no longer validates (by name)."""
    out, problems = [], []
    listing = await table.list()
    for rec in listing.records:
        try:
            out.append(parse_policy(rec.value))
        except ValidationError as e:
            problems.append(f"network policy {rec.name}: {e}")
    problems += [str(e) for e in listing.errors]
    return out, problems
