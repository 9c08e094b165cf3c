"""Packers: the classic placement strategies as plain functions over a snapshot.

``pack``: first-fit decreasing -- items (replicas) by size, largest first; bins (nodes) in a
fixed order, nodes already in use first, then by score; each item into the first bin with
room. ``pack_best_fit``: each item into the node in use with the least capacity left after
it (cpu and memory, as fractions of allocatable), opening the best-scored empty node only
when no node in use has room. ``pack_with_spread``: replicas spread evenly over a
topology key (zone, region, node or any label), score choosing within the least-loaded
domain. All see earlier placements of the same plan; none over-commits.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import SchedulerConfig, Strategy
from cloudless.scheduler.plan import Plan
from cloudless.scheduler.scheduler import Scheduler
from cloudless.scheduler.snapshot import Snapshot
from cloudless.scheduler.strategy import with_spread


def pack(
    snapshot: Snapshot,
    groups: Sequence[tuple[WorkloadSpec, int]],
    *,
    config: SchedulerConfig | None = None,
    rng: random.Random | None = None,
) -> Plan:
    return Scheduler(config, rng).schedule_many(snapshot, groups, strategy=Strategy.FIRST_FIT)


def pack_best_fit(
    snapshot: Snapshot,
    groups: Sequence[tuple[WorkloadSpec, int]],
    *,
    config: SchedulerConfig | None = None,
    rng: random.Random | None = None,
) -> Plan:
    return Scheduler(config, rng).schedule_many(snapshot, groups, strategy=Strategy.BEST_FIT)


def pack_with_spread(
    snapshot: Snapshot,
    spec: WorkloadSpec,
    count: int,
    *,
    topology_key: str = "zone",
    max_skew: int = 1,
    existing: Iterable[Replica] | None = None,
    config: SchedulerConfig | None = None,
    rng: random.Random | None = None,
) -> Plan:
    s = with_spread(spec, topology_key, max_skew)
    return Scheduler(config, rng).place(snapshot, s, count, existing=existing)
