"""Prometheus instruments, named in Prometheus conventions.

Every name starts with ``cloudless_``, is in base units (seconds, bytes) and counters end in
``_total``. Label values come from small closed sets (routes as templates, states, outcomes,
store operations), never from node, replica or user names, so the series count does not grow
with the fleet: per-node figures live on each agent's own endpoint.

The instruments are process-wide (one coordinator or agent per process in production); a
``registry()`` holds them plus whatever per-component collectors the caller adds, so tests
that run several components in one process each get a registry of their own for the
component-specific part.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

# ``*_created`` series double a scrape's size and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Latency buckets: a local API call is ~1 ms, an etcd write ~2-20 ms, a slow round seconds.
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# ---- coordinator ----------------------------------------------------------------------------

API_REQUESTS = Counter(
    "cloudless_api_requests_total",
    "User API requests answered, by route template, method and HTTP status code.",
    ["route", "method", "code"],
    registry=None,
)
API_DURATION = Histogram(
    "cloudless_api_request_duration_seconds",
    "Time to answer a user API request (streams: until the response started).",
    ["route", "method"],
    buckets=FAST,
    registry=None,
)
HEARTBEATS = Counter(
    "cloudless_heartbeats_received_total", "Agent heartbeats received by the leader.", registry=None
)
HEARTBEATS_LATE = Counter(
    "cloudless_heartbeats_late_total",
    "Heartbeats that arrived more than one interval later than due.",
    registry=None,
)
AGENT_SESSIONS = Gauge(
    "cloudless_agent_sessions", "Agent streams open on this coordinator.", registry=None
)
AGENT_SESSIONS_OPENED = Counter(
    "cloudless_agent_sessions_opened_total",
    "Agent streams opened on this coordinator: a stream re-opened by an agent counts again.",
    registry=None,
)
RECONCILE_ROUNDS = Counter(
    "cloudless_reconcile_rounds_total", "Reconciliation rounds run by the leader.", registry=None
)
RECONCILE_DURATION = Histogram(
    "cloudless_reconcile_round_duration_seconds",
    "Time from a round's snapshot to its last write.",
    buckets=FAST,
    registry=None,
)
SCHEDULING = Counter(
    "cloudless_scheduling_decisions_total",
    "Replica placements decided, by outcome (placed, unplaced).",
    ["outcome"],
    registry=None,
)
SCHEDULING_DURATION = Histogram(
    "cloudless_scheduling_duration_seconds",
    "Time the scheduler took to place one workload's missing replicas.",
    buckets=FAST,
    registry=None,
)
STORE_DURATION = Histogram(
    "cloudless_store_request_duration_seconds",
    "Latency of a request to the cluster store, by operation.",
    ["op"],
    buckets=FAST,
    registry=None,
)
STORE_ERRORS = Counter(
    "cloudless_store_errors_total",
    "Store requests that failed, by operation and error class.",
    ["op", "error"],
    registry=None,
)
LEADER_CHANGES = Counter(
    "cloudless_leader_changes_total",
    "Times this coordinator saw the leadership change hands (either way).",
    registry=None,
)
IS_LEADER = Gauge(
    "cloudless_coordinator_is_leader", "1 while this coordinator leads, else 0.", registry=None
)
ENROLLMENTS = Counter(
    "cloudless_enrollments_total",
    "Enrollment requests by outcome (enrolled, refused).",
    ["outcome"],
    registry=None,
)

# ---- agent ----------------------------------------------------------------------------------

CONTAINER_STARTS = Counter(
    "cloudless_agent_container_starts_total", "Containers started by this agent.", registry=None
)
CONTAINER_RESTARTS = Counter(
    "cloudless_agent_container_restarts_total",
    "Containers restarted under their restart policy after they exited or failed.",
    registry=None,
)
CONTAINER_EXITS = Counter(
    "cloudless_agent_container_exits_total",
    "Containers that ended, by how (exited, failed, oom).",
    ["how"],
    registry=None,
)
PULL_BYTES = Counter(
    "cloudless_agent_image_pull_bytes_total", "Image bytes downloaded by this agent.", registry=None
)
PULL_DURATION = Histogram(
    "cloudless_agent_image_pull_duration_seconds",
    "Time to pull (and unpack) one image.",
    ["outcome"],
    buckets=SLOW,
    registry=None,
)

S3_REQUESTS = Counter(
    "cloudless_s3_requests_total",
    "S3 API requests this node answered, by HTTP method and status code.",
    ["method", "code"],
    registry=None,
)
S3_DURATION = Histogram(
    "cloudless_s3_request_duration_seconds",
    "Time to answer an S3 API request (a streamed body included), by HTTP method.",
    ["method"],
    buckets=FAST,
    registry=None,
)

COORDINATOR_INSTRUMENTS: tuple[Collector, ...] = (
    API_REQUESTS,
    API_DURATION,
    HEARTBEATS,
    HEARTBEATS_LATE,
    AGENT_SESSIONS,
    AGENT_SESSIONS_OPENED,
    RECONCILE_ROUNDS,
    RECONCILE_DURATION,
    SCHEDULING,
    SCHEDULING_DURATION,
    STORE_DURATION,
    STORE_ERRORS,
    LEADER_CHANGES,
    IS_LEADER,
    ENROLLMENTS,
)
PROBE_RESULTS = Counter(
    "cloudless_agent_probe_results_total",
    "Health probe results, by check (liveness, readiness), probe kind and result.",
    ["check", "kind", "result"],
    registry=None,
)

AGENT_INSTRUMENTS: tuple[Collector, ...] = (
    S3_REQUESTS,
    S3_DURATION,
    PROBE_RESULTS,
    CONTAINER_STARTS,
    CONTAINER_RESTARTS,
    CONTAINER_EXITS,
    PULL_BYTES,
    PULL_DURATION,
)


Family = Metric  # a pre-computed metric family (gauge, counter)


class FamiliesCollector(Collector):
    """Serves the families last handed to ``update``: for figures computed before a scrape
    (from the store, the runtime), since collection itself cannot await."""

    def __init__(self) -> None:
        self._families: list[Family] = []

    def update(self, families: Iterable[Family]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Family]:
        return iter(self._families)

    def describe(self) -> list[Family]:
        return []  # unchecked: the families change with each update


def registry(instruments: Iterable[Collector], *extra: Collector) -> CollectorRegistry:
    """A registry with the process-wide ``instruments`` and this component's ``extra``
    collectors (an instrument may sit in several registries; names must not clash)."""
    reg = CollectorRegistry(auto_describe=True)
    for c in (*instruments, *extra):
        reg.register(c)
    return reg


def exposition(reg: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The registry's samples in the format the scraper asked for (``Accept``): OpenMetrics
    if it says so, else the Prometheus text format 0.0.4."""
    if "application/openmetrics-text" in accept:
        return openmetrics_latest(reg), OPENMETRICS_TYPE  # type: ignore[no-untyped-call]
    return generate_latest(reg), CONTENT_TYPE_LATEST
