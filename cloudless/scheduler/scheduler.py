"""The scheduler's public face: ``Scheduler(config, rng).place / schedule_many / explain``.

Pure: no I/O, no clock, no await. Input is an immutable ``Snapshot``; output a ``Plan`` the
coordinator re-checks and commits. Placements inside one plan see each other (capacity is
never over-committed). Deterministic for a given ``random.Random`` state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from functools import partial

import numpy as np

from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import SchedulerConfig, Strategy, normalize_weights
from cloudless.scheduler.context import WorkState
from cloudless.scheduler.engine import GroupRun, LocalityHint, hint_array, place_group
from cloudless.scheduler.plan import Assignment, Explanation, NodeScore, Plan, Unplaced
from cloudless.scheduler.registry import FACTOR_NAMES
from cloudless.scheduler.search import Pins, search
from cloudless.scheduler.snapshot import F64, Snapshot, demand_vector
from cloudless.scheduler.strategy import fallback_engines, resolve


def plan_tails(groups: Sequence[tuple[WorkloadSpec, int]]) -> list[F64]:
    """For each group (in placing order) the total demand of the groups after it."""
    out: list[F64] = []
    acc = np.zeros(4)
    for spec, count in reversed(groups):
        out.append(acc.copy())
        acc = acc + np.array(demand_vector(spec.resources)) * float(max(count, 0))
    return out[::-1]


class Scheduler:
    """Holds configuration and the tie-break ``rng``; every call is otherwise independent.

    ``locality_hint(spec) -> {node_id: value in [0, 1]}`` is the data-locality hook: a node
    whose hint is higher than its zone/region locality takes the hint as its locality.
    """

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
        self.locality_hint = locality_hint

    def place(
        self,
        snapshot: Snapshot,
        spec: WorkloadSpec,
        count: int,
        *,
        existing: Iterable[Replica] | None = None,
        strategy: Strategy | None = None,
    ) -> Plan:
        """Nodes for ``count`` new replicas of ``spec``.

        ``existing``: the workload's current replicas, counted for spread, per-node and
        per-domain limits and self-affinity (default: its replicas in the snapshot). Their
        resources are the snapshot's business (``Snapshot.build`` counts them)."""
        spec, strat = resolve(spec, strategy, self.config.strategy)
        reps = list(existing) if existing is not None else None

        def attempt(order: Sequence[int], pins: Pins) -> Plan:
            ws = WorkState(snapshot)
            if reps is not None:
                ws.set_counts(spec.name, reps)
            assigned, unplaced = place_group(
                ws,
                spec,
                count,
                0,
                config=self.config,
                weights=self.weights,
                rng=self.rng,
                strategy=strat,
                hint=self.locality_hint,
                pin=pins.get(0),
            )
            return Plan(tuple(assigned), (unplaced,) if unplaced else ())

        return search(snapshot.nodes, [(spec, count)], attempt)

    def schedule_many(
        self,
        snapshot: Snapshot,
        groups: Sequence[tuple[WorkloadSpec, int]],
        *,
        strategy: Strategy | None = None,
    ) -> Plan:
        """One plan for several workloads, larger replicas first; each group sees the
        placements of the groups before it. The order, and the repair of a plan that leaves
        replicas unplaced, are ``search``'s (cloudless/scheduler/search.py)."""
        how = [resolve(s, strategy, self.config.strategy) for s, _ in groups]
        counts = [c for _, c in groups]

        def attempt(order: Sequence[int], pins: Pins, engine: Strategy | None = None) -> Plan:
            ws = WorkState(snapshot)
            tails = plan_tails([groups[i] for i in order])
            nxt: dict[str, int] = {}
            assigned: list[Assignment] = []
            unplaced: list[Unplaced] = []
            for k, i in enumerate(order):
                (spec, strat), count = how[i], counts[i]
                first = nxt.get(spec.name, 0)
                a, u = place_group(
                    ws,
                    spec,
                    count,
                    first,
                    config=self.config,
                    weights=self.weights,
                    rng=self.rng,
                    strategy=engine or strat,
                    hint=self.locality_hint,
                    tail=tails[k],
                    pin=pins.get(i),
                )
                nxt[spec.name] = first + count
                assigned.extend(a)
                if u:
                    unplaced.append(u)
            return Plan(tuple(assigned), tuple(unplaced))

        tops = [float(snapshot.alloc[d].max()) if snapshot.n else 0.0 for d in range(3)]
        others = [partial(attempt, engine=e) for e in fallback_engines([e for _, e in how])]
        return search(snapshot.nodes, groups, attempt, tops, others)

    def explain(self, snapshot: Snapshot, spec: WorkloadSpec, top: int = 10) -> Explanation:
        """The ``top`` best nodes for one more replica (with their score components) and every
        refused node counted under its first failing reason. Does not consume ``rng``."""
        ws = WorkState(snapshot)
        ws.specs[spec.name] = spec
        hint = hint_array(snapshot, self.locality_hint, spec)
        run = GroupRun(ws, spec, self.config, self.weights, hint, Strategy.SCORE, 0)
        rej = run.rejections()
        cand = run.candidates()
        sa = run._step_adj()
        key = run.total if sa is None else run.total + sa
        idx = np.flatnonzero(cand)
        best = idx[np.argsort(-key[idx], kind="stable")][: max(0, top)]
        notes = []
        if spec.placement.spread and rej.fit and len(idx) < rej.fit:
            keys = ", ".join(c.topology_key for c in spec.placement.spread)
            notes.append(
                f"spread over {keys}: {len(idx)} of {rej.fit} nodes are in the "
                "least-loaded domains and preferred"
            )
        scores = tuple(NodeScore(snapshot.nodes[j].id, run.components(int(j), sa)) for j in best)
        return Explanation(spec.name, scores, rej, tuple(notes))


def schedule_many(
    snapshot: Snapshot,
    groups: Sequence[tuple[WorkloadSpec, int]],
    *,
    config: SchedulerConfig | None = None,
    rng: random.Random | None = None,
) -> Plan:
    """``Scheduler(config, rng).schedule_many(snapshot, groups)``."""
    return Scheduler(config, rng).schedule_many(snapshot, groups)


def explain(
    snapshot: Snapshot, spec: WorkloadSpec, top: int = 10, *, config: SchedulerConfig | None = None
) -> Explanation:
    """``Scheduler(config).explain(snapshot, spec, top)``."""
    return Scheduler(config).explain(snapshot, spec, top)
