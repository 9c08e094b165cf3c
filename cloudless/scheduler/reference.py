"""A plain-Python reference scheduler: the same filters, scores, strategies and tie-breaks as
the vectorised engine, written node by node over ``Node`` objects and recomputed from
scratch for every replica. It is slow on purpose and kept as the test oracle (the tests
assert both produce the same plan) and as the baseline for the benchmark's speed-up ratio.

It shares no filtering or scoring code with the engine (label expressions use the model's
own ``LabelExpr.matches``); only the formulas, their order of operations and the reason
strings are the same by contract.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from functools import partial

from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import SchedulerConfig, Strategy, normalize_weights
from cloudless.scheduler.engine import BF_IN_USE, LocalityHint
from cloudless.scheduler.plan import Assignment, Plan, Rejections, ScoreComponents, Unplaced
from cloudless.scheduler.plugins import (
    host_ports,
    max_per_domain,
    max_per_node,
    node_affinity,
    node_conditions,
    resources,
    spread,
    topology,
    workload_affinity,
)
from cloudless.scheduler.plugins.arch import arch_reason, device_reason
from cloudless.scheduler.plugins.labels import expr_failure
from cloudless.scheduler.plugins.network import NOT_PUBLIC, bandwidth_reason
from cloudless.scheduler.plugins.pin import reason as pin_reason
from cloudless.scheduler.registry import FACTOR_NAMES
from cloudless.scheduler.search import Pin, Pins, search
from cloudless.scheduler.snapshot import occupies
from cloudless.scheduler.strategy import fallback_engines, resolve

Vec = list[int]


def _vec(r: Resources) -> Vec:
    return [r.cpu_millis, r.memory_bytes, r.disk_bytes, r.bandwidth_bps]


def _safe(a: int) -> float:
    return float(a) if a > 0 else 1.0


class ReferenceScheduler:
    """Same constructor and ``place`` / ``schedule_many`` as ``Scheduler``, over raw nodes."""

    def __init__(
        self,
        config: SchedulerConfig | None = None,
        rng: random.Random | None = None,
        *,
        locality_hint: LocalityHint | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        self.rng = rng if rng is not None else random.Random(0)
        self.weights = normalize_weights(self.config.weights, FACTOR_NAMES)
        self.hint = locality_hint

    def place(
        self,
        nodes: Sequence[Node],
        replicas: Iterable[Replica],
        workloads: Mapping[str, WorkloadSpec | Resources],
        spec: WorkloadSpec,
        count: int,
        *,
        existing: Iterable[Replica] | None = None,
        strategy: Strategy | None = None,
    ) -> Plan:
        spec, strat = resolve(spec, strategy, self.config.strategy)
        reps = list(replicas)
        mine = list(existing) if existing is not None else None

        def attempt(order: Sequence[int], pins: Pins) -> Plan:
            st = _State(nodes, reps, workloads)
            if mine is not None:
                st.counts[spec.name] = [0] * len(nodes)
                for r in mine:
                    j = st.index.get(r.node_id, -1)
                    if j >= 0 and occupies(r):
                        st.counts[spec.name][j] += 1
            a, u = self._group(st, spec, count, 0, strat, None, pins.get(0))
            return Plan(tuple(a), (u,) if u else ())

        return search(nodes, [(spec, count)], attempt)

    def schedule_many(
        self,
        nodes: Sequence[Node],
        replicas: Iterable[Replica],
        workloads: Mapping[str, WorkloadSpec | Resources],
        groups: Sequence[tuple[WorkloadSpec, int]],
        *,
        strategy: Strategy | None = None,
    ) -> Plan:
        how = [resolve(s, strategy, self.config.strategy) for s, _ in groups]
        reps = list(replicas)

        def attempt(order: Sequence[int], pins: Pins, engine: Strategy | None = None) -> Plan:
            st = _State(nodes, reps, workloads)
            tails: list[list[float]] = []
            acc = [0.0, 0.0, 0.0, 0.0]
            for i in reversed(order):
                tails.append(list(acc))
                s_i, cnt = groups[i]
                acc = [
                    a + float(v) * float(max(cnt, 0))
                    for a, v in zip(acc, _vec(s_i.resources), strict=True)
                ]
            tails.reverse()
            nxt: dict[str, int] = {}
            assigned: list[Assignment] = []
            unplaced: list[Unplaced] = []
            for k, i in enumerate(order):
                (spec, strat), count = how[i], groups[i][1]
                first = nxt.get(spec.name, 0)
                a, u = self._group(st, spec, count, first, engine or strat, tails[k], pins.get(i))
                nxt[spec.name] = first + count
                assigned.extend(a)
                if u:
                    unplaced.append(u)
            return Plan(tuple(assigned), tuple(unplaced))

        others = [partial(attempt, engine=e) for e in fallback_engines([e for _, e in how])]
        return search(nodes, groups, attempt, None, others)

    # --- one workload -------------------------------------------------------------------

    def _group(
        self,
        st: _State,
        spec: WorkloadSpec,
        count: int,
        first: int,
        strategy: Strategy,
        tail: list[float] | None = None,
        pin: Pin | None = None,
    ) -> tuple[list[Assignment], Unplaced | None]:
        st.specs[spec.name] = spec
        if count <= 0:
            return [], None
        n = len(st.nodes)
        r = self.rng.randrange(n) if n else 0
        ev = _Eval(st, spec, self.config, self.weights, self.hint, pin)
        order: dict[int, float] = {}
        in_use0 = sum(1 for j in range(n) if st.in_use(j))
        if strategy in (Strategy.FIRST_FIT, Strategy.BEST_FIT):
            tops = [
                max((float(_vec(x.allocatable)[d]) for x in st.nodes), default=0.0) for d in (0, 1)
            ]

            def size(j: int) -> float:
                a = _vec(st.nodes[j].allocatable)
                acc = 0.0
                for d in (0, 1):
                    acc = acc + (a[d] / tops[d] if tops[d] > 0 else 0.0)
                return acc / 2.0

            keyed = sorted(
                range(n),
                key=lambda j: (
                    -int(st.in_use(j)),
                    -(0.0 if st.in_use(j) else size(j)),
                    -(ev.total(j) + ev.step_adj(j)),
                    (j - r) % n,
                ),
            )
            order = {j: float(k) for k, j in enumerate(keyed)}
            ev.rank = order
        out: list[Assignment] = []
        for i in range(count):
            cand = [j for j in range(n) if ev.first_failure(j) is None]
            for c in spec.placement.spread:
                if not cand:
                    break
                low = min(ev.own_dom(c.topology_key, j) for j in cand)
                cand = [j for j in cand if ev.own_dom(c.topology_key, j) == low]
            if not cand:
                return out, Unplaced(spec.name, first + i, count - i, ev.rejections())
            if strategy is Strategy.FIRST_FIT:
                keys = {j: -order[j] for j in cand}
            elif strategy is Strategy.BEST_FIT:
                keys = {j: ev.best_fit_key(j) for j in cand}
            else:
                keys = {j: ev.total(j) + ev.step_adj(j) for j in cand}
            best = max(keys.values())
            ties = sorted(j for j in cand if keys[j] == best)
            j = next((t for t in ties if t >= r), ties[0])
            if strategy is not Strategy.SCORE and not st.in_use(j):
                after = tail or [0.0, 0.0, 0.0, 0.0]
                need = [float(ev.demand[d]) * float(count - i) + after[d] for d in range(4)]
                holds = [
                    k
                    for k in cand
                    if not st.in_use(k)
                    and all(
                        float(_vec(st.nodes[k].allocatable)[d]) - float(st.used[k][d]) >= need[d]
                        for d in range(4)
                    )
                ]
                if holds:
                    k = min(holds, key=lambda k: (size(k), order[k]))
                    if k != j and strategy is Strategy.FIRST_FIT:
                        order[k] = in_use0 - 0.5
                    j = k
            comp = ev.components(j)
            out.append(Assignment(spec.name, first + i, st.nodes[j].id, comp.total, comp))
            st.add(spec.name, j, ev.demand)
        return out, None


class _State:
    def __init__(
        self,
        nodes: Sequence[Node],
        replicas: Iterable[Replica],
        workloads: Mapping[str, WorkloadSpec | Resources],
    ) -> None:
        self.nodes = list(nodes)
        self.index = {x.id: i for i, x in enumerate(self.nodes)}
        self.specs = {k: v for k, v in workloads.items() if isinstance(v, WorkloadSpec)}
        demand = {
            k: _vec(v.resources if isinstance(v, WorkloadSpec) else v) for k, v in workloads.items()
        }
        self.used: list[Vec] = [[0, 0, 0, 0] for _ in self.nodes]
        self.version = 0
        self._dc: dict[tuple[str, str, int], dict[str, int]] = {}
        self.counts: dict[str, list[int]] = {}
        for r in replicas:
            j = self.index.get(r.node_id, -1)
            if j < 0 or not occupies(r):
                continue
            self.counts.setdefault(r.workload, [0] * len(self.nodes))[j] += 1
            d = demand.get(r.workload)
            if d:
                self.used[j] = [a + b for a, b in zip(self.used[j], d, strict=True)]
        costs = [max(0.0, x.cost_per_hour) for x in self.nodes]
        top = max(costs, default=0.0)
        self.cost_norm = [c / top if top > 0 else 0.0 for c in costs]

    def count(self, workload: str) -> list[int]:
        return self.counts.setdefault(workload, [0] * len(self.nodes))

    def in_use(self, j: int) -> bool:
        return any(u > 0 for u in self.used[j])

    def add(self, workload: str, j: int, demand: Vec) -> None:
        self.used[j] = [a + b for a, b in zip(self.used[j], demand, strict=True)]
        self.count(workload)[j] += 1
        self.version += 1

    def domain_counts(self, workload: str, key: str) -> dict[str, int]:
        """Replicas of ``workload`` per value of label ``key`` (memoised per state version)."""
        ck = (workload, key, self.version)
        if ck in self._dc:
            return self._dc[ck]
        out: dict[str, int] = {}
        self._dc[ck] = out
        for j, c in enumerate(self.count(workload)):
            v = self.nodes[j].label(key)
            if c and v is not None:
                out[v] = out.get(v, 0) + c
        return out


class _Eval:
    """Filters and scores of one workload against the current ``_State``."""

    def __init__(
        self,
        st: _State,
        spec: WorkloadSpec,
        config: SchedulerConfig,
        weights: tuple[float, ...],
        hint: LocalityHint | None,
        pin: Pin | None = None,
    ) -> None:
        self.st, self.spec, self.name = st, spec, spec.name
        self.pin = pin
        self.config, self.weights = config, weights
        self.rank: dict[int, float] = {}
        self.demand = _vec(spec.resources)
        raw = hint(spec) if hint else {}
        self.hint = {k: min(1.0, max(0.0, float(v))) for k, v in raw.items()}
        self.static_ok = [self._static_failure(j) is None for j in range(len(st.nodes))]
        could = [
            ok and all(a >= d for a, d in zip(_vec(x.allocatable), self.demand, strict=True))
            for ok, x in zip(self.static_ok, st.nodes, strict=True)
        ]
        self.eligible = {
            c.topology_key: {
                v
                for k, ok in enumerate(could)
                if ok and (v := st.nodes[k].label(c.topology_key)) is not None
            }
            for c in spec.placement.spread
        }

    # filters, in registry order; each returns the first failing reason or None
    def _static_failure(self, j: int) -> str | None:
        x, p = self.st.nodes[j], self.spec.placement
        if x.state is not NodeState.READY:
            return x.state.value
        if x.conditions.memory_pressure:
            return node_conditions.MEMORY
        if x.conditions.disk_pressure:
            return node_conditions.DISK
        if p.arch and x.label("arch") not in p.arch:
            return arch_reason(p.arch)
        if p.device_classes and x.label("device_class") not in p.device_classes:
            return device_reason(p.device_classes)
        for e in p.node_selector:
            if not e.matches(x):
                return expr_failure(e)
        if p.required_node_affinity and not any(t.matches(x) for t in p.required_node_affinity):
            return node_affinity.REASON
        if p.needs_public and not x.public:
            return NOT_PUBLIC
        if p.min_bandwidth_bps > 0 and x.allocatable.bandwidth_bps < p.min_bandwidth_bps:
            return bandwidth_reason(p.min_bandwidth_bps)
        for k in topology.topology_keys(self.spec):
            if x.label(k) is None:
                return topology.missing_reason(k)
        for t in p.required_workload_affinity:
            if t.workload == self.name:
                continue
            if self.present(t.workload, t.topology_key, j) == t.anti:
                return workload_affinity.affinity_reason(t)
        for owner, key in workload_affinity.symmetric_terms(self.st.specs, self.name):
            if self.present(owner, key, j):
                return workload_affinity.symmetric_reason(owner, key)
        if self.pin is not None and x.label(self.pin[0]) != self.pin[1]:
            return pin_reason(*self.pin)
        return None

    def first_failure(self, j: int) -> str | None:
        if not self.static_ok[j]:
            return self._static_failure(j)
        p, x = self.spec.placement, self.st.nodes[j]
        alloc, used = _vec(x.allocatable), self.st.used[j]
        for d in range(4):
            if self.demand[d] > 0 and alloc[d] - used[d] < self.demand[d]:
                return resources.REASONS[d]
        own = self.st.count(self.name)
        if p.max_per_node > 0 and own[j] >= p.max_per_node:
            return max_per_node.reason(p.max_per_node)
        if self.spec.published and any(
            self.st.count(w)[j] > 0 for w in host_ports.rivals(self.st.specs, self.spec)
        ):
            return host_ports.reason(self.spec)
        for key, n in p.max_per_domain:
            if self.own_dom(key, j) >= n:
                return max_per_domain.reason(key, n)
        for t in p.required_workload_affinity:
            if t.workload != self.name:
                continue
            here = self.present(self.name, t.topology_key, j)
            if t.anti and here:
                return workload_affinity.affinity_reason(t)
            if not t.anti and any(own) and not here:
                return workload_affinity.affinity_reason(t)
        for c in p.spread:
            dc = self.st.domain_counts(self.name, c.topology_key)
            elig = self.eligible[c.topology_key]
            low = float(min((dc.get(v, 0) for v in elig), default=0))
            if self.own_dom(c.topology_key, j) + 1.0 - low > c.max_skew:
                return spread.reason(c)
        return None

    def rejections(self) -> Rejections:
        counts: dict[str, int] = {}
        fit = 0
        for j in range(len(self.st.nodes)):
            why = self.first_failure(j)
            if why is None:
                fit += 1
            else:
                counts[why] = counts.get(why, 0) + 1
        ordered = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return Rejections(len(self.st.nodes), fit, ordered)

    def present(self, workload: str, key: str, j: int) -> bool:
        v = self.st.nodes[j].label(key)
        return v is not None and self.st.domain_counts(workload, key).get(v, 0) > 0

    def own_dom(self, key: str, j: int) -> float:
        v = self.st.nodes[j].label(key)
        dc = self.st.domain_counts(self.name, key)
        if v is None:
            return float(
                sum(
                    c
                    for k, c in enumerate(self.st.count(self.name))
                    if self.st.nodes[k].label(key) is None
                )
            )
        return float(dc.get(v, 0))

    # scores
    def factors(self, j: int) -> list[float]:
        x, p, d = self.st.nodes[j], self.spec.placement, self.demand
        if not p.preferred_zones and not p.preferred_regions:
            loc = 0.5
        else:
            loc = 0.0
            if p.preferred_regions and x.label("region") in p.preferred_regions:
                loc = 0.75
            if p.preferred_zones and x.label("zone") in p.preferred_zones:
                loc = 1.0
        if self.hint:
            loc = max(loc, self.hint.get(x.id, 0.0))
        rel = min(1.0, max(0.0, x.reliability))
        a = _vec(x.allocatable)
        sc, sm = d[0] / _safe(a[0]), d[1] / _safe(a[1])
        cost = 0.5 * (1.0 - self.st.cost_norm[j]) + 0.5 * (1.0 - min(1.0, abs(sc - sm)))
        use, used = _vec(x.usage), self.st.used[j]
        f = [min(1.0, (float(max(used[k], use[k])) + float(d[k])) / _safe(a[k])) for k in range(3)]
        hi, lo = max(max(f[0], f[1]), f[2]), min(min(f[0], f[1]), f[2])
        util = 0.5 * (1.0 - (hi - lo)) + 0.5 * (1.0 - (f[0] + f[1] + f[2]) / 3.0)
        ref = max(2.0 * p.min_bandwidth_bps, 1e9)
        bw = min(1.0, float(a[3]) / ref)
        if self.spec.ports or p.needs_public:
            reach = 0.5 * (1.0 if x.public else 0.0) + 0.5 * (1.0 if not x.nat else 0.0)
        else:
            reach = 1.0
        net = 0.7 * bw + 0.3 * reach
        return [loc, rel, cost, util, net]

    def static_adj(self, j: int) -> float:
        x, p = self.st.nodes[j], self.spec.placement
        acc = 0.0
        if p.preferred_node_affinity:
            total_w = float(sum(t.weight for t in p.preferred_node_affinity))
            m = 0.0
            for t in p.preferred_node_affinity:
                m = m + float(t.weight) * (1.0 if t.matches(x) else 0.0)
            acc = acc + m / total_w * self.config.node_affinity_scale
        for w in p.preferred_workload_affinity:
            if w.workload != self.name:
                here = self.present(w.workload, w.topology_key, j)
                acc = acc + self._term(w.anti, w.weight) * (1.0 if here else 0.0)
        return acc

    def step_adj(self, j: int) -> float:
        acc = 0.0
        for w in self.spec.placement.preferred_workload_affinity:
            if w.workload == self.name:
                here = self.present(self.name, w.topology_key, j)
                acc = acc + self._term(w.anti, w.weight) * (1.0 if here else 0.0)
        return acc

    def _term(self, anti: bool, weight: int) -> float:
        return (-1.0 if anti else 1.0) * (weight / 100.0) * self.config.affinity_scale

    def total(self, j: int) -> float:
        c, w = self.factors(j), self.weights
        acc = w[0] * c[0]
        for i in range(1, len(w)):
            acc = acc + w[i] * c[i]
        return acc + self.static_adj(j)

    def best_fit_key(self, j: int) -> float:
        a, used, d = _vec(self.st.nodes[j].allocatable), self.st.used[j], self.demand
        lc = float(a[0] - used[0] - d[0]) / _safe(a[0])
        lm = float(a[1] - used[1] - d[1]) / _safe(a[1])
        if self.st.in_use(j):
            return BF_IN_USE + (1.0 - (lc + lm) / 2.0)
        return -float(self.rank[j])

    def components(self, j: int) -> ScoreComponents:
        sa = self.step_adj(j)
        adj = self.static_adj(j) + sa
        total = self.total(j) + sa
        return ScoreComponents(tuple(zip(FACTOR_NAMES, self.factors(j), strict=True)), adj, total)
