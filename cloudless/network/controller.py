"""The coordinator's network loop: device slots, services and endpoints kept in the store.

Rules of ``plan_network`` (pure, over one snapshot):

* every node that is not REMOVED holds an address slot; the slot of a node that is REMOVED or
  gone is released;
* every live workload with ports is a service ``<workload>.default`` (tcp ports); the service of
  a workload deleted or without ports is deleted (its VIP is freed);
* a service's endpoints are its replicas that are desired and observed RUNNING and report an
  address (``Replica.endpoint`` "ip:port") inside their node's container subnet (others are
  counted in ``total`` and their reason listed in ``problems``), except replicas on a device
  the overlay observer found unreachable (``network-overlay/<node>`` says ``reachable:
  false``: no lighthouse or relay reaches it), which are listed in ``problems`` with why;
* while any object-store node is registered, the S3 API is the service ``s3.system``
  (``s3_service``: an endpoint per device serving it, at its bridge address), deleted when
  none is; the leader times each registration's beat on its own clock (``Presence``), so a
  device whose S3 API stopped drops out once its beat stands still for ``s3_stale_s``.

``NetworkController.lead(fence)`` runs the plan on every change of workloads, replicas, the
overlay's reachability or an object-store registration (other than its beat and disk
figures), and every ``period`` seconds (for node joins and removals, and stale beats), as
leader, fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import Clock
from cloudless.lib.waits import within
from cloudless.model.node import NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.network.addressing import AddressPlan, DeviceAddresses
from cloudless.network.errors import AddressExhausted
from cloudless.network.observer import overlay_records, unreachable
from cloudless.network.s3_service import STALE_S, s3_endpoints, s3_spec
from cloudless.network.services import (
    S3_SERVICE,
    Endpoint,
    EndpointSet,
    ReplicaAddress,
    ServiceKey,
    ServicePort,
    ServiceSpec,
    endpoint_set,
    label_problem,
)
from cloudless.network.state import (
    SERVICES,
    ServiceRecord,
    assign_device,
    assign_service,
    delete_service,
    device_slots,
    release_device,
    set_endpoints,
)
from cloudless.objectstore.members import NODES, VOLATILE, Presence, StorageNode
from cloudless.store.fence import Fence
from cloudless.store.protocol import Store
from cloudless.store.tables import ROOT

log = logging.getLogger(__name__)
NAMESPACE = "default"


@dataclass(frozen=True)
class EndpointUpdate:
    key: ServiceKey
    endpoints: tuple[Endpoint, ...]
    total: int


@dataclass(frozen=True)
class NetworkPlan:
    assign: tuple[str, ...] = ()
    release: tuple[str, ...] = ()
    upsert: tuple[ServiceSpec, ...] = ()
    delete: tuple[ServiceKey, ...] = ()
    endpoints: tuple[EndpointUpdate, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.assign or self.release or self.upsert or self.delete or self.endpoints)


def _spec_matches(rec: ServiceRecord, spec: ServiceSpec) -> bool:
    return rec.balance == spec.balance and tuple((p.port, p.protocol) for p in rec.ports) == tuple(
        (p.port, p.protocol) for p in spec.ports
    )


def plan_network(
    nodes: Mapping[str, NodeState],
    workloads: Mapping[str, tuple[bool, tuple[int, ...]]],  # name -> (deleted, ports)
    replicas: Mapping[str, list[ReplicaAddress]],  # workload -> its replicas
    slots: Mapping[str, int],
    services: Mapping[ServiceKey, ServiceRecord],
    plan: AddressPlan,
    unreachable: Mapping[str, str] | None = None,
    s3: EndpointSet | None = None,
) -> NetworkPlan:
    """What to write so the store matches the rules above (see the module docstring);
    ``s3``: the S3 service's endpoints (``s3_service.s3_endpoints``), None while no object-store
    node is registered."""
    live_nodes = {n for n, st in nodes.items() if st is not NodeState.REMOVED}
    assign = tuple(sorted(live_nodes - set(slots)))
    release = tuple(sorted(set(slots) - live_nodes))
    devices: dict[str, DeviceAddresses] = {n: plan.addresses(k) for n, k in slots.items()}
    problems: list[str] = []
    wanted: dict[ServiceKey, ServiceSpec] = {}
    for name, (deleted, ports) in sorted(workloads.items()):
        if deleted or not ports:
            continue
        why = label_problem("workload name", name)
        if why:
            problems.append(f"workload {name}: no service: {why}")
            continue
        key = ServiceKey(NAMESPACE, name)
        wanted[key] = ServiceSpec(key, tuple(ServicePort(p) for p in sorted(set(ports))))
    if s3 is not None:
        wanted[S3_SERVICE] = s3_spec()
    upsert = tuple(
        spec
        for key, spec in wanted.items()
        if key not in services or not _spec_matches(services[key], spec)
    )
    delete = tuple(sorted(set(services) - set(wanted)))
    updates: list[EndpointUpdate] = []
    for key in wanted:
        if key == S3_SERVICE and s3 is not None:
            es = s3
        else:
            es = endpoint_set(key, replicas.get(key.name, []), devices, unreachable)
        problems.extend(f"service {key}: {i}" for i in es.ignored)
        rec = services.get(key)
        have = tuple((e.ip, e.replica) for e in rec.endpoints) if rec else None
        want = tuple((str(e.ip), e.replica) for e in es.endpoints)
        if have != want or (rec is not None and rec.total != es.total):
            updates.append(EndpointUpdate(key, es.endpoints, es.total))
    return NetworkPlan(assign, release, upsert, delete, tuple(updates), tuple(problems))


def routed(raw: bytes) -> object:
    """What of a registration as stored the network routes by: without the fields that
    change every beat (``members.VOLATILE``: the beat counter, the disk); None once deleted."""
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        return raw
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict):
        for name in VOLATILE:
            doc["data"].pop(name, None)
    return doc


def replica_addresses(replicas: Mapping[str, Replica]) -> dict[str, list[ReplicaAddress]]:
    """Replicas as the network sees them, grouped by workload."""
    out: dict[str, list[ReplicaAddress]] = {}
    for r in replicas.values():
        ip = r.endpoint.rsplit(":", 1)[0] if r.endpoint else ""
        running = r.desired is DesiredState.RUNNING and r.observed is ReplicaState.RUNNING
        out.setdefault(r.workload, []).append(ReplicaAddress(r.id, r.node_id, ip, running, running))
    return out


class NetworkController:
    def __init__(
        self,
        state: ClusterState,
        plan: AddressPlan,
        clock: Clock,
        period: float = 5.0,
        s3_stale_s: float = STALE_S,
    ) -> None:
        self.state = state
        self.plan = plan
        self.clock = clock
        self.period = period
        self.s3_stale_s = s3_stale_s
        self.s3_presence = Presence()
        self.last: NetworkPlan | None = None
        self.problems: tuple[str, ...] = ()
        self._wake = asyncio.Event()

    async def lead(self, fence: Fence) -> None:
        async with asyncio.TaskGroup() as tg:
            for table in ("workloads/", "replicas/", "network-overlay/"):
                tg.create_task(self._watch(ROOT + table))
            tg.create_task(self._watch_registrations())
            tg.create_task(self._loop(fence))

    async def _watch(self, prefix: str) -> None:
        rev = await self.state.store.revision()
        async for _ in self.state.store.watch(prefix, start_revision=rev + 1):
            self._wake.set()

    async def _watch_registrations(self) -> None:
        """Wake on an object-store registration appearing, going or changing in what the
        network routes by (``routed``: every node beats every few seconds, its disk figures
        with it; the periodic round catches stale ones)."""
        seen: dict[str, object] = {}
        rev = await self.state.store.revision()
        async for batch in self.state.store.watch(NODES.prefix, start_revision=rev + 1):
            wake = False
            for ev in batch.events:
                body = routed(ev.kv.value)
                if ev.key not in seen or seen[ev.key] != body:
                    seen[ev.key] = body
                    wake = True
            if wake:
                self._wake.set()

    async def _s3(self, store: Store) -> EndpointSet | None:
        listing = await NODES.bind(store).list()
        nodes: dict[str, StorageNode] = {r.name: r.value for r in listing.records}
        if not nodes:
            return None
        now = self.clock.monotonic()
        self.s3_presence.observe(nodes, now)
        silent = {n: self.s3_presence.silent_for(n, now) for n in nodes}
        devices = {n: self.plan.addresses(k) for n, k in (await device_slots(store)).items()}
        es = s3_endpoints(
            nodes, silent, devices, unreachable(await overlay_records(store)), self.s3_stale_s
        )
        unreadable = tuple(f"a registration does not decode: {e}" for e in listing.errors)
        return replace(es, ignored=es.ignored + unreadable) if unreadable else es

    async def _loop(self, fence: Fence) -> None:
        while True:
            self._wake.clear()
            await self.reconcile_once(fence)
            with contextlib.suppress(TimeoutError):
                await within(self.period, self._wake.wait())
            await self.clock.sleep(0.1)  # coalesce a burst of changes into one round

    async def reconcile_once(self, fence: Fence) -> NetworkPlan:
        snap = await self.state.snapshot()
        view = snap.view
        store = self.state.store
        slots = await device_slots(store)
        services = {
            ServiceKey(r.value.namespace, r.value.name): r.value
            for r in (await SERVICES.bind(store).list()).records
        }
        plan = plan_network(
            {n: node.state for n, node in view.nodes.items()},
            {n: (w.deleted, tuple(w.spec.ports)) for n, w in view.workloads.items()},
            replica_addresses(view.replicas),
            slots,
            services,
            self.plan,
            unreachable(await overlay_records(store)),
            await self._s3(store),
        )
        self.last = plan
        self.problems = plan.problems
        for node_id in plan.release:
            await release_device(store, node_id, fence=fence)
        for node_id in plan.assign:
            try:
                await assign_device(store, self.plan, node_id, fence=fence)
            except AddressExhausted as e:  # every later node waits for a freed slot too
                self.problems = (f"node {node_id}: no address slot: {e}",)
                break
        for key in plan.delete:
            await delete_service(store, key, fence=fence)
        for spec in plan.upsert:
            await assign_service(store, self.plan, spec, fence=fence)
        for u in plan.endpoints:
            await set_endpoints(store, u.key, u.endpoints, u.total, fence=fence)
        if not plan.empty:
            log.info(
                "network: %d slots taken, %d freed, %d services set, %d deleted, %d endpoint sets",
                len(plan.assign),
                len(plan.release),
                len(plan.upsert),
                len(plan.delete),
                len(plan.endpoints),
            )
        return plan
