"""Choosing which replicas to stop when a workload has more than it should.

Keep the best-scored set: replicas without a node go first, then those on nodes the spec
no longer allows (not ready, under pressure, wrong labels), then the lowest-scored. With a
spread constraint each victim comes from the currently most-loaded domain, so the replicas
that stay remain evenly spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import SchedulerConfig, Strategy, normalize_weights
from cloudless.scheduler.context import WorkState
from cloudless.scheduler.engine import GroupRun
from cloudless.scheduler.registry import FACTOR_NAMES
from cloudless.scheduler.snapshot import Snapshot


def choose_replicas_to_stop(
    snapshot: Snapshot,
    spec: WorkloadSpec,
    replicas: Sequence[Replica],
    keep: int,
    config: SchedulerConfig | None = None,
) -> list[Replica]:
    """The ``len(replicas) - keep`` replicas to stop (none if there are not more than
    ``keep``), in the order they should be stopped. Deterministic: ties by replica id."""
    excess = len(replicas) - max(0, keep)
    if excess <= 0:
        return []
    cfg = config or SchedulerConfig()
    ws = WorkState(snapshot)
    ws.specs[spec.name] = spec
    w = normalize_weights(cfg.weights, FACTOR_NAMES)
    run = GroupRun(ws, spec, cfg, w, None, Strategy.SCORE, 0)
    score: dict[str, float] = {}
    domain: dict[str, str | None] = {}
    key = spec.placement.spread[0].topology_key if spec.placement.spread else None
    for r in replicas:
        j = snapshot.index.get(r.node_id, -1)
        if j < 0:
            score[r.id] = -math.inf
            domain[r.id] = None
            continue
        s = float(run.total[j])
        score[r.id] = s if run.g.static_ok[j] else s - 1e6
        domain[r.id] = snapshot.nodes[j].label(key) if key else None
    left = sorted(replicas, key=lambda r: r.id)
    out: list[Replica] = []
    for _ in range(excess):
        pool = [r for r in left if score[r.id] == -math.inf] or left
        if key and pool is left:
            per: dict[str | None, int] = {}
            for r in left:
                per[domain[r.id]] = per.get(domain[r.id], 0) + 1
            most = max(per.values())
            pool = [r for r in left if per[domain[r.id]] == most]
            bad = [r for r in left if score[r.id] < -1e5]
            pool = bad or pool
        victim = min(pool, key=lambda r: (score[r.id], r.id))
        out.append(victim)
        left.remove(victim)
    return out
