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
from cloudless.scheduler.plugins.pin import PinFilter
from cloudless.scheduler.plugins.spread import narrow
from cloudless.scheduler.registry import FACTOR_NAMES, FACTORS, FILTERS
from cloudless.scheduler.search import Pin
from cloudless.scheduler.snapshot import F64, Bool, Snapshot

#: Best-fit keys: nodes in use score BF_IN_USE + (1 - leftover); empty nodes minus their
#: rank in the opening order (<= 0), so any node in use with room beats every empty one.
BF_IN_USE = 3.0

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


def node_sizes(snap: Snapshot) -> F64:
    """Each node's capacity as the mean of its cpu and memory shares of the largest node's:
    the packers open the biggest empty node first."""
    out: F64 = np.zeros(snap.n)
    for d in (0, 1):
        top = float(snap.alloc[d].max()) if snap.n else 0.0
        out = out + (snap.alloc[d] / top if top > 0 else np.zeros(snap.n))
    res: F64 = out / 2.0
    return res


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
        pin: Pin | None = None,
    ) -> None:
        g = self.g = Group(ws, spec, hint, (config.affinity_scale, config.node_affinity_scale))
        self.weights = weights
        self.strategy = strategy
        self.r = r
        self.filters = [f for f in FILTERS if f.applies(spec)]
        if pin is not None:
            self.filters.append(PinFilter(*pin))
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
        self.in_use0 = int(np.count_nonzero(self.g.ws.in_use()))
        if strategy is Strategy.FIRST_FIT:
            self.key = -self._open_rank()
        elif strategy is Strategy.BEST_FIT:
            self.rank = self._open_rank()
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
            return -float(self.rank[j])
        lc = (a[0] - used[0] - d[0]) / (a[0] if a[0] > 0 else 1.0)
        lm = (a[1] - used[1] - d[1]) / (a[1] if a[1] > 0 else 1.0)
        return BF_IN_USE + (1.0 - (lc + lm) / 2.0)

    def _step_adj(self) -> F64 | None:
        return step_adjust(self.g) if self.has_step_adj else None

    def _open_rank(self) -> F64:
        """The packers' bin order, fixed for the group: nodes in use first (by score), then
        empty nodes biggest first (``node_sizes``), then by score; rotation breaks ties."""
        n = self.g.snap.n
        score = self.total
        sa = self._step_adj()
        if sa is not None:
            score = score + sa
        rot = (np.arange(n) - self.r) % max(n, 1)
        in_use = self.g.ws.in_use()
        size = np.where(in_use, 0.0, node_sizes(self.g.snap))
        order = np.lexsort((rot, -score, -size, -in_use.astype(np.int8)))
        rank = np.empty(n, dtype=np.float64)
        rank[order] = np.arange(n, dtype=np.float64)
        return rank

    def _bf_key(self, s: slice) -> F64:
        g = self.g
        a, used, d = g.snap.alloc[:, s], g.ws.used[:, s], g.demand
        lc = (a[0] - used[0] - d[0]) / np.where(a[0] > 0, a[0], 1.0)
        lm = (a[1] - used[1] - d[1]) / np.where(a[1] > 0, a[1], 1.0)
        leftover = (lc + lm) / 2.0
        out: F64 = np.where(g.ws.in_use()[s], BF_IN_USE + (1.0 - leftover), -self.rank[s])
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

    def snug(self, cand: Bool, j: int, need: F64) -> int:
        in_use = self.g.ws.in_use()
        if in_use[j]:
            return j
        free = self.g.snap.alloc - self.g.ws.used
        holds = cand & ~in_use & (free >= need[:, None]).all(axis=0)
        if not holds.any():
            return j
        rank = -self.key if self.strategy is Strategy.FIRST_FIT else self.rank
        idx = np.flatnonzero(holds)
        size = node_sizes(self.g.snap)[idx]
        best = np.lexsort((rank[idx], size))[0]
        return int(idx[best])

    def components(self, j: int, step_adj: F64 | None) -> ScoreComponents:
        adj = float(self.adj[j]) + (float(step_adj[j]) if step_adj is not None else 0.0)
        total = float(self.total[j]) + (float(step_adj[j]) if step_adj is not None else 0.0)
        factors = tuple((n, float(c[j])) for n, c in zip(FACTOR_NAMES, self.comps, strict=True))
        return ScoreComponents(factors, adj, total)

    def step(self, need: F64 | None = None) -> tuple[int, ScoreComponents] | None:
        """Choose and commit a node for one more replica, or None if none passes.

        ``need``: what the rest of the plan asks for, this replica included; a packer about
        to open an empty node opens instead the smallest empty candidate that holds all of
        it, if there is one (``snug``)."""
        cand = self.candidates()
        if not cand.any():
            return None
        sa = self._step_adj()
        key = self.key
        if sa is not None and self.strategy is Strategy.SCORE:
            key = key + sa
        j = self.pick(cand, key)
        if need is not None and self.strategy is not Strategy.SCORE:
            k = self.snug(cand, j, need)
            if k != j and self.strategy is Strategy.FIRST_FIT:
                self.key[k] = 0.5 - self.in_use0  # after the nodes in use, before the empty
            j = k
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
    tail: F64 | None = None,
    pin: Pin | None = None,
) -> tuple[list[Assignment], Unplaced | None]:
    """Place ``count`` replicas of ``spec`` onto ``ws`` (mutating it). Stops at the first
    replica no node can take; the rest are reported unplaced with the reasons. ``tail``: the
    demand of the groups still to come in this plan (for the packers' ``snug`` choice);
    ``pin``: a domain the group is held to (``search``'s repair)."""
    snap = ws.snap
    ws.specs[spec.name] = spec
    if count <= 0:
        return [], None
    r = rng.randrange(snap.n) if snap.n else 0
    run = GroupRun(ws, spec, config, weights, hint_array(snap, hint, spec), strategy, r, pin)
    out: list[Assignment] = []
    after = tail if tail is not None else np.zeros(4)
    for i in range(count):
        res = run.step(run.g.demand * float(count - i) + after)
        if res is None:
            un = Unplaced(spec.name, first_index + i, count - i, run.rejections())
            return out, un
        j, comp = res
        out.append(Assignment(spec.name, first_index + i, snap.nodes[j].id, comp.total, comp))
    return out, None
