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
  false``: no lighthouse or relay reaches it), which are listed in ``problems`` with why.

``NetworkController.lead(fence)`` runs the plan on every change of workloads or replicas and
every ``period`` seconds (for node joins and removals), as leader, fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import Clock
from cloudless.model.node import NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.network.addressing import AddressPlan, DeviceAddresses
from cloudless.network.errors import AddressExhausted
from cloudless.network.observer import overlay_records, unreachable
from cloudless.network.services import (
    Endpoint,
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
from cloudless.store.fence import Fence
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
    return tuple((p.port, p.protocol) for p in rec.ports) == tuple(
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
) -> NetworkPlan:
    """What to write so the store matches the rules above (see the module docstring)."""
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
    upsert = tuple(
        spec
        for key, spec in wanted.items()
        if key not in services or not _spec_matches(services[key], spec)
    )
    delete = tuple(sorted(set(services) - set(wanted)))
    updates: list[EndpointUpdate] = []
    for key in wanted:
        es = endpoint_set(key, replicas.get(key.name, []), devices, unreachable)
        problems.extend(f"service {key}: {i}" for i in es.ignored)
        rec = services.get(key)
        have = tuple((e.ip, e.replica) for e in rec.endpoints) if rec else None
        want = tuple((str(e.ip), e.replica) for e in es.endpoints)
        if have != want or (rec is not None and rec.total != es.total):
            updates.append(EndpointUpdate(key, es.endpoints, es.total))
    return NetworkPlan(assign, release, upsert, delete, tuple(updates), tuple(problems))


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
        self, state: ClusterState, plan: AddressPlan, clock: Clock, period: float = 5.0
    ) -> None:
        self.state = state
        self.plan = plan
        self.clock = clock
        self.period = period
        self.last: NetworkPlan | None = None
        self.problems: tuple[str, ...] = ()
        self._wake = asyncio.Event()

    async def lead(self, fence: Fence) -> None:
        async with asyncio.TaskGroup() as tg:
            for table in ("workloads/", "replicas/", "network-overlay/"):
                tg.create_task(self._watch(ROOT + table))
            tg.create_task(self._loop(fence))

    async def _watch(self, prefix: str) -> None:
        rev = await self.state.store.revision()
        async for _ in self.state.store.watch(prefix, start_revision=rev + 1):
            self._wake.set()

    async def _loop(self, fence: Fence) -> None:
        while True:
            self._wake.clear()
            await self.reconcile_once(fence)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)
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
