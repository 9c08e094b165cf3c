"""The placement engine: filters, scores and picks a node for one replica at a time.

Per workload (a "group") every static filter and score factor is evaluated once over all
nodes as numpy columns; after each placement only the chosen node's resource fit,
utilization and key are recomputed (``NODE`` refresh), and ``STEP`` filters (spread,
per-domain limits, affinity to itself) are re-checked over all nodes. Ties are broken by a
rotation ``r`` drawn once per group from the injected ``random.Random``: among equal keys the
first node at or after index ``r`` wins (wrapping around). Same input, same seed -> same plan.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

import numpy as np

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import SchedulerConfig, Strategy
from cloudless.scheduler.context import Group, WorkState
from cloudless.scheduler.plan import Assignment, Rejections, ScoreComponents, Unplaced
from cloudless.scheduler.plugins.affinity_prefs import has_step_terms, static_adjust, step_adjust
from cloudless.scheduler.plugins.base import Filter, Refresh
from cloudless.scheduler.plugins.spread import narrow
from cloudless.scheduler.registry import FACTOR_NAMES, FACTORS, FILTERS
from cloudless.scheduler.snapshot import F64, Bool, Snapshot

#: Best-fit keys: nodes in use score BF_IN_USE + (1 - leftover); empty nodes their total
#: score capped at BF_CAP, so any node in use with room beats every empty one.
BF_IN_USE, BF_CAP = 3.0, 2.0

LocalityHint = Callable[[WorkloadSpec], Mapping[str, float]]


def hint_array(snap: Snapshot, hint: LocalityHint | None, spec: WorkloadSpec) -> F64 | None:
    if hint is None:
        return None
    out = np.zeros(snap.n)
    for node_id, v in hint(spec).items():
        j = snap.index.get(node_id)
        if j is not None:
            out[j] = min(1.0, max(0.0, float(v)))
    return out


def item_size(snap: Snapshot, spec: WorkloadSpec) -> float:
    """Dominant share of one replica against the largest node: FFD's "size"."""
    r = spec.resources
    size = 0.0
    for d, v in enumerate((r.cpu_millis, r.memory_bytes, r.disk_bytes)):
        top = float(snap.alloc[d].max()) if snap.n else 0.0
        if v > 0 and top > 0:
            size = max(size, v / top)
    return size


def count_rejections(g: Group, filters: list[Filter]) -> Rejections:
    """Every node counted once, under the first filter (and reason) it fails."""
    n = g.snap.n
    left = np.ones(n, dtype=np.bool_)
    counts: dict[str, int] = {}
    for f in filters:
        for reason, passes in f.check(g, True):
            failed = int(np.count_nonzero(left & ~passes))
            if failed:
                counts[reason] = counts.get(reason, 0) + failed
                left &= passes
    ordered = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return Rejections(n, int(np.count_nonzero(left)), ordered)


class GroupRun:
    """Arrays for placing replicas of one workload on the current ``WorkState``."""

    def __init__(
        self,
        ws: WorkState,
        spec: WorkloadSpec,
        config: SchedulerConfig,
        weights: tuple[float, ...],
        hint: F64 | None,
        strategy: Strategy,
        r: int,
    ) -> None:
        g = self.g = Group(ws, spec, hint, (config.affinity_scale, config.node_affinity_scale))
        self.weights = weights
        self.strategy = strategy
        self.r = r
        self.filters = [f for f in FILTERS if f.applies(spec)]
        self.node_filters = [f for f in self.filters if f.refresh is Refresh.NODE]
        self.step_filters = [f for f in self.filters if f.refresh is Refresh.STEP]
        ok = np.ones(g.snap.n, dtype=np.bool_)
        for f in self.filters:
            if f.refresh is Refresh.STATIC:
                for _, m in f.check(g, False):
                    ok &= m
        g.static_ok = ok.copy()
        for f in self.node_filters:
            for _, m in f.check(g, False):
                ok &= m
        self.ok = ok
        self.node_factors = [i for i, f in enumerate(FACTORS) if f.refresh is Refresh.NODE]
        self.comps = [f.score(g) for f in FACTORS]
        self.adj = static_adjust(g)
        self.total = self._total(slice(None))
        self.has_step_adj = has_step_terms(g)
        self.spread = bool(spec.placement.spread)
        if strategy is Strategy.FIRST_FIT:
            self.key = self._ffd_key()
        elif strategy is Strategy.BEST_FIT:
            self.key = self._bf_key(slice(None))
        else:
            self.key = self.total

    def _total(self, s: slice) -> F64:
        w = self.weights
        acc = w[0] * self.comps[0][s]
        for i in range(1, len(w)):
            acc = acc + w[i] * self.comps[i][s]
        out: F64 = acc + self.adj[s]
        return out

    def _total_at(self, j: int) -> float:
        """``_total`` for one node in plain floats (same operations, same rounding)."""
        w, c = self.weights, self.comps
        acc = w[0] * float(c[0][j])
        for i in range(1, len(w)):
            acc = acc + w[i] * float(c[i][j])
        return acc + float(self.adj[j])

    def _bf_key_at(self, j: int) -> float:
        g = self.g
        a: list[float] = g.snap.alloc[:2, j].tolist()
        used: list[float] = g.ws.used[:2, j].tolist()
        d: list[float] = g.demand_list
        if not g.ws.in_use()[j]:
            return min(float(self.total[j]), BF_CAP)
        lc = (a[0] - used[0] - d[0]) / (a[0] if a[0] > 0 else 1.0)
        lm = (a[1] - used[1] - d[1]) / (a[1] if a[1] > 0 else 1.0)
        return BF_IN_USE + (1.0 - (lc + lm) / 2.0)

    def _step_adj(self) -> F64 | None:
        return step_adjust(self.g) if self.has_step_adj else None

    def _ffd_key(self) -> F64:
        n = self.g.snap.n
        score = self.total
        sa = self._step_adj()
        if sa is not None:
            score = score + sa
        rot = (np.arange(n) - self.r) % max(n, 1)
        in_use = self.g.ws.in_use()
        order = np.lexsort((rot, -score, -in_use.astype(np.int8)))
        rank = np.empty(n, dtype=np.float64)
        rank[order] = np.arange(n, dtype=np.float64)
        out: F64 = -rank
        return out

    def _bf_key(self, s: slice) -> F64:
        g = self.g
        a, used, d = g.snap.alloc[:, s], g.ws.used[:, s], g.demand
        lc = (a[0] - used[0] - d[0]) / np.where(a[0] > 0, a[0], 1.0)
        lm = (a[1] - used[1] - d[1]) / np.where(a[1] > 0, a[1], 1.0)
        leftover = (lc + lm) / 2.0
        out: F64 = np.where(
            g.ws.in_use()[s], BF_IN_USE + (1.0 - leftover), np.minimum(self.total[s], BF_CAP)
        )
        return out

    def candidates(self) -> Bool:
        cand = self.ok
        if self.step_filters:
            cand = cand.copy()
            for f in self.step_filters:
                for _, m in f.check(self.g, False):
                    cand &= m
        if self.spread:
            cand = narrow(self.g, cand)
        return cand

    def pick(self, cand: Bool, key: F64) -> int:
        """The candidate with the highest key; among equals the first at or after ``r``."""
        s = np.where(cand, key, -np.inf)
        tail = s[self.r :]
        k = int(tail.argmax()) if len(tail) else -1
        if k >= 0 and tail[k] == s.max():
            return self.r + k
        return int(s.argmax())

    def components(self, j: int, step_adj: F64 | None) -> ScoreComponents:
        adj = float(self.adj[j]) + (float(step_adj[j]) if step_adj is not None else 0.0)
        total = float(self.total[j]) + (float(step_adj[j]) if step_adj is not None else 0.0)
        factors = tuple((n, float(c[j])) for n, c in zip(FACTOR_NAMES, self.comps, strict=True))
        return ScoreComponents(factors, adj, total)

    def step(self) -> tuple[int, ScoreComponents] | None:
        """Choose and commit a node for one more replica, or None if none passes."""
        cand = self.candidates()
        if not cand.any():
            return None
        sa = self._step_adj()
        key = self.key
        if sa is not None and self.strategy is Strategy.SCORE:
            key = key + sa
        j = self.pick(cand, key)
        comp = self.components(j, sa)
        self.commit(j)
        return j, comp

    def commit(self, j: int) -> None:
        g = self.g
        g.place(j)
        if self.node_filters:
            self.ok[j] = bool(g.static_ok[j]) and all(f.check_at(g, j) for f in self.node_filters)
        for i in self.node_factors:
            self.comps[i][j] = FACTORS[i].score_at(g, j)
        self.total[j] = self._total_at(j)
        if self.strategy is Strategy.BEST_FIT:
            self.key[j] = self._bf_key_at(j)

    def rejections(self) -> Rejections:
        return count_rejections(self.g, self.filters)


def place_group(
    ws: WorkState,
    spec: WorkloadSpec,
    count: int,
    first_index: int,
    *,
    config: SchedulerConfig,
    weights: tuple[float, ...],
    rng: random.Random,
    strategy: Strategy,
    hint: LocalityHint | None = None,
) -> tuple[list[Assignment], Unplaced | None]:
    """Place ``count`` replicas of ``spec`` onto ``ws`` (mutating it). Stops at the first
    replica no node can take; the rest are reported unplaced with the reasons."""
    snap = ws.snap
    ws.specs[spec.name] = spec
    if count <= 0:
        return [], None
    r = rng.randrange(snap.n) if snap.n else 0
    run = GroupRun(ws, spec, config, weights, hint_array(snap, hint, spec), strategy, r)
    out: list[Assignment] = []
    for i in range(count):
        res = run.step()
        if res is None:
            un = Unplaced(spec.name, first_index + i, count - i, run.rejections())
            return out, un
        j, comp = res
        out.append(Assignment(spec.name, first_index + i, snap.nodes[j].id, comp.total, comp))
    return out, None
