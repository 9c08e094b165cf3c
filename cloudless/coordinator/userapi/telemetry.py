"""The coordinator's telemetry: gauges computed from the cluster's records at scrape time,
the Prometheus service-discovery document, and the wiring of both into the user API.

``cluster_families`` is pure: a view of nodes, workloads and replicas in, metric families
out. Series are per state, per zone and per workload: closed sets or sets the operator
names, never one per node or replica, so a 5,000-node cluster scrapes in a few kilobytes.
Any coordinator (leader or follower) serves them from the same records.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.coordinators import known_coordinators
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.observability.certs import CertExpiry
from cloudless.observability.http import MetricsPage, request_metrics, sd_targets
from cloudless.observability.metrics import COORDINATOR_INSTRUMENTS, FamiliesCollector, registry
from cloudless.store.errors import DecodeError
from cloudless.store.table import Table

T = TypeVar("T")

GaugeFamilies = list[GaugeMetricFamily]


def cluster_families(view: ClusterView) -> GaugeFamilies:
    """Nodes by state and by zone, capacity and usage of schedulable nodes, replicas by
    observed state, and each workload's wanted and running replica counts."""
    nodes = [n for n in view.nodes.values() if n.state is not NodeState.REMOVED]
    by_state = Tally(n.state for n in nodes)
    f_nodes = GaugeMetricFamily("cloudless_nodes", "Nodes by lifecycle state.", labels=["state"])
    for s in NodeState:
        if s is not NodeState.REMOVED:
            f_nodes.add_metric([s.value], by_state.get(s, 0))

    f_zone = GaugeMetricFamily(
        "cloudless_zone_nodes", "Nodes by zone and state.", labels=["zone", "state"]
    )
    for (zone, state), k in sorted(Tally((n.zone, n.state.value) for n in nodes).items()):
        f_zone.add_metric([zone, state], k)

    ready = [n for n in nodes if n.state is NodeState.READY]
    f_cpu = GaugeMetricFamily(
        "cloudless_ready_cpu_cores",
        "CPU of ready nodes: what workloads may use, and what is in use.",
        labels=["kind"],
    )
    f_cpu.add_metric(["allocatable"], sum(n.allocatable.cpu_millis for n in ready) / 1000)
    f_cpu.add_metric(["used"], sum(n.usage.cpu_millis for n in ready) / 1000)
    f_mem = GaugeMetricFamily(
        "cloudless_ready_memory_bytes",
        "Memory of ready nodes: what workloads may use, and what is in use.",
        labels=["kind"],
    )
    f_mem.add_metric(["allocatable"], sum(n.allocatable.memory_bytes for n in ready))
    f_mem.add_metric(["used"], sum(n.usage.memory_bytes for n in ready))

    wanted = [r for r in view.replicas.values() if r.desired is DesiredState.RUNNING]
    by_obs = Tally(r.observed for r in wanted)
    f_rep = GaugeMetricFamily(
        "cloudless_replicas",
        "Replicas desired running, by the state their agent last reported.",
        labels=["state"],
    )
    for rs in ReplicaState:
        f_rep.add_metric([rs.value], by_obs.get(rs, 0))

    running = Tally(r.workload for r in wanted if r.observed is ReplicaState.RUNNING)
    f_want = GaugeMetricFamily(
        "cloudless_workload_replicas_wanted",
        "Replicas each workload's spec asks for.",
        labels=["workload"],
    )
    f_run = GaugeMetricFamily(
        "cloudless_workload_replicas_running",
        "Replicas of each workload desired and observed running.",
        labels=["workload"],
    )
    f_unplaced = GaugeMetricFamily(
        "cloudless_workload_replicas_unplaced",
        "Replicas of each workload the scheduler could not place.",
        labels=["workload"],
    )
    for name, rec in sorted(view.workloads.items()):
        if rec.deleted:
            continue
        f_want.add_metric([name], rec.spec.replicas)
        f_run.add_metric([name], running.get(name, 0))
        f_unplaced.add_metric([name], rec.unplaced)
    return [f_nodes, f_zone, f_cpu, f_mem, f_rep, f_want, f_run, f_unplaced]


class DecodedTable(Generic[T]):
    """A table's records by name as of the last ``read``, each decoded once per change
    (kept by mod revision). Undecodable records are left out."""

    def __init__(self, table: Table[T]) -> None:
        self.table = table
        self.revision = 0
        self._cache: dict[str, tuple[int, T]] = {}

    async def read(self, revision: int = 0) -> dict[str, T]:
        listing = await self.table.store.list(self.table.prefix, revision=revision)
        self.revision = listing.revision
        fresh: dict[str, tuple[int, T]] = {}
        for kv in listing.kvs:
            hit = self._cache.get(kv.key)
            if hit is None or hit[0] != kv.mod_revision:
                try:
                    hit = (kv.mod_revision, self.table.decode(kv).value)
                except DecodeError:
                    continue
            fresh[kv.key] = hit
        self._cache = fresh
        return {self.table.name_of(k): v for k, (_, v) in fresh.items()}


class CoordinatorTelemetry:
    """What one coordinator exposes: ``GET /metrics`` and ``GET /v1/sd/prometheus`` on the
    user API (behind its client-certificate check, so a scraper holds a cluster identity),
    the request instrument as the outermost middleware, and optionally a listener of its
    own for ``/metrics`` (``metrics_listen``)."""

    def __init__(self, state: ClusterState, cert_files: Mapping[str, Path]) -> None:
        self.state = state
        self.nodes: DecodedTable[Node] = DecodedTable(state.nodes)
        self.workloads: DecodedTable[WorkloadRecord] = DecodedTable(state.workloads)
        self.replicas: DecodedTable[Replica] = DecodedTable(state.replicas)
        self.cluster = FamiliesCollector()
        self.registry = registry(COORDINATOR_INSTRUMENTS, self.cluster, CertExpiry(cert_files))
        self.page = MetricsPage(self.registry, [self.refresh])

    async def refresh(self) -> None:
        """Read the three tables at one revision, decoding only records changed since the
        previous scrape (at 5,000 nodes, decoding is most of a scrape's cost)."""
        nodes = await self.nodes.read()
        rev = self.nodes.revision
        workloads = await self.workloads.read(rev)
        replicas = await self.replicas.read(rev)
        view = ClusterView(
            nodes=nodes, workloads=workloads, replicas={r.id: r for r in replicas.values()}
        )
        self.cluster.update(cluster_families(view))

    def install(self, app: web.Application) -> None:
        """Add the routes and the request instrument to a user API app not yet started."""
        app.middlewares.insert(0, request_metrics())
        app.router.add_get("/metrics", self.page.handle)
        app.router.add_get("/v1/sd/prometheus", self.service_discovery)

    async def service_discovery(self, request: web.Request) -> web.Response:
        nodes = await self.state.nodes.list()
        coordinators = await known_coordinators(self.state.store)
        doc = sd_targets(((c.name, c.api) for c in coordinators), (r.value for r in nodes.records))
        return web.json_response(doc, dumps=json.dumps)
