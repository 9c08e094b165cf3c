"""The agent's telemetry: its ``/metrics`` page, served on a listener of its own.

Process-wide instruments (container starts, restarts, exits, pulls, S3 requests) plus, at
each scrape, one series per replica this node runs (state, restarts, CPU, memory and its
limit) read from the supervisor and the runtime, and the object-store node's gauges (disk,
refusing writes, serving reads, catch-up, resync queue, hints) when it runs one.
Per-replica labels are fine here: one agent runs tens of replicas, and the fleet-wide
picture is the coordinator's job.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cloudless.agent.supervisor import LocalStatus
from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.model.replica import ReplicaState
from cloudless.objectstore.service import Figures
from cloudless.observability.certs import CertExpiry
from cloudless.observability.http import MetricsPage, mtls_context
from cloudless.observability.metrics import AGENT_INSTRUMENTS, FamiliesCollector, registry
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.runtime.types import ContainerStats

Family = GaugeMetricFamily | CounterMetricFamily


def replica_families(
    statuses: Sequence[LocalStatus], stats: dict[str, ContainerStats]
) -> list[Family]:
    """One series per replica and measure; replicas without a stats sample (not running,
    or the runtime did not answer) have only their state and restarts. Pure."""
    f_state = GaugeMetricFamily(
        "cloudless_agent_replicas", "Replicas on this node by observed state.", labels=["state"]
    )
    counts = {s: 0 for s in ReplicaState}
    for st in statuses:
        counts[st.state] += 1
    for state, k in counts.items():
        f_state.add_metric([state.value], k)
    labels = ["replica", "workload"]
    f_restarts = CounterMetricFamily(
        "cloudless_replica_restarts", "Restarts of each replica on this node.", labels=labels
    )
    f_cpu = CounterMetricFamily(
        "cloudless_replica_cpu_seconds", "CPU time used by each replica.", labels=labels
    )
    f_mem = GaugeMetricFamily(
        "cloudless_replica_memory_bytes", "Memory in use by each replica.", labels=labels
    )
    f_lim = GaugeMetricFamily(
        "cloudless_replica_memory_limit_bytes",
        "Memory limit of each replica (0: none).",
        labels=labels,
    )
    for st in statuses:
        key = [st.replica_id, st.workload]
        f_restarts.add_metric(key, st.restarts)
        s = stats.get(st.replica_id)
        if s is None:
            continue
        f_cpu.add_metric(key, s.cpu_ns / 1e9)
        f_mem.add_metric(key, s.memory_bytes)
        f_lim.add_metric(key, s.memory_limit_bytes)
    return [f_state, f_restarts, f_cpu, f_mem, f_lim]


def storage_families(f: Figures) -> list[Family]:
    """The object-store node's gauges (``StorageService.figures``); a figure not known yet
    (-1) is left out. Pure."""
    out: list[Family] = []

    def gauge(name: str, doc: str, value: float) -> None:
        if value >= 0:
            g = GaugeMetricFamily(f"cloudless_objectstore_{name}", doc)
            g.add_metric([], value)
            out.append(g)

    gauge("disk_free_bytes", "Free bytes of the file system under the store's data.", f.disk_free)
    gauge("disk_size_bytes", "Size of the file system under the store's data.", f.disk_size)
    gauge(
        "refusing_writes",
        "1 while writes fail here for want of room (one did in the last two minutes).",
        int(f.refusing_writes),
    )
    gauge(
        "serving_reads",
        "1 once this node's copy is read (0 while it catches up after downtime).",
        int(f.serving_reads),
    )
    gauge(
        "catching_up_partitions",
        "Partitions whose copy here is not read until compared with another owner.",
        f.catching_up,
    )
    gauge("resync_pending_blocks", "Blocks waiting in the resync queue.", f.resync_pending)
    gauge(
        "hints_pending",
        "Rows and blocks kept here for owners that were down (hinted handoff).",
        f.hints_pending,
    )
    gauge("layout_version", "The layout version this node last read.", f.layout_version)
    return out


class AgentTelemetry:
    """The agent's registry and page. ``statuses`` is the supervisor's live list."""

    STATS_TIMEOUT_S = 2.0

    def __init__(
        self,
        runtime: ContainerRuntime,
        statuses: Callable[[], Sequence[LocalStatus]],
        cert_files: dict[str, Path],
        storage: Callable[[], Figures | None] = lambda: None,
    ) -> None:
        """``storage``: the object-store node's figures (None: this agent runs none)."""
        self.runtime = runtime
        self.statuses = statuses
        self.storage = storage
        self._replicas = FamiliesCollector()
        self._storage = FamiliesCollector()
        self.registry = registry(
            AGENT_INSTRUMENTS, self._replicas, self._storage, CertExpiry(cert_files)
        )
        self.page = MetricsPage(self.registry, [self.refresh])

    async def refresh(self) -> None:
        statuses = list(self.statuses())
        running = [s.replica_id for s in statuses if s.state is ReplicaState.RUNNING]

        async def one(rid: str) -> ContainerStats | None:
            try:
                return await within(self.STATS_TIMEOUT_S, self.runtime.container_stats(rid))
            except (CloudlessError, TimeoutError, OSError):
                return None

        samples = await asyncio.gather(*(one(r) for r in running))
        stats = {r: s for r, s in zip(running, samples, strict=True) if s is not None}
        self._replicas.update(replica_families(statuses, stats))
        figures = self.storage()
        self._storage.update(storage_families(figures) if figures is not None else [])


def agent_tls_context(identity_dir: Path) -> ssl.SSLContext:
    """Mutual TLS with the node's own certificate; the scraper needs a certificate from
    the cluster's CA (a user or service identity)."""
    return mtls_context(
        str(identity_dir / "node.crt"), str(identity_dir / "node.key"), str(identity_dir / "ca.pem")
    )
