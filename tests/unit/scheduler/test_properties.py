"""Hypothesis properties over small random clusters and workloads:

- capacity is never over-committed by a plan;
- a required anti-affinity is never violated by a new placement;
- rejection counts add up to the node count;
- the vectorised engine and the plain-Python reference produce the same plan.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudless.model.node import NodeState
from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadAffinity, WorkloadSpec
from cloudless.scheduler import Scheduler, Snapshot, Strategy
from cloudless.scheduler.reference import ReferenceScheduler
from cloudless.scheduler.testing import node, sel, spec
from cloudless.scheduler.testing import spread as spread_c

NAMES = ("a", "b", "c")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def nodes_st(draw: Any) -> list[Any]:
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        out.append(
            node(
                f"n{i}",
                cpu=f"{draw(st.sampled_from((1000, 2000, 4000, 8000)))}m",
                memory=f"{draw(st.sampled_from((1, 2, 4, 8)))}Gi",
                zone=draw(st.sampled_from(("z1", "z2", "z3", ""))),
                state=draw(st.sampled_from((NodeState.READY,) * 4 + (NodeState.CORDONED,))),
                labels={"tier": "gold"} if draw(st.booleans()) else None,
                reliability=draw(st.sampled_from((0.5, 0.8, 1.0))),
                public=draw(st.booleans()),
                cost_per_hour=draw(st.sampled_from((0.0, 0.5, 1.0))),
            )
        )
    return out


@st.composite
def spec_st(draw: Any, name: str) -> WorkloadSpec:
    kw: dict[str, Any] = {}
    if draw(st.booleans()):
        kw["max_per_node"] = draw(st.integers(1, 3))
    terms = []
    if draw(st.integers(0, 3)) == 0:
        terms.append(
            WorkloadAffinity(
                draw(st.sampled_from(NAMES)), draw(st.sampled_from(("node", "zone"))), anti=True
            )
        )
    if draw(st.integers(0, 5)) == 0:
        terms.append(WorkloadAffinity(draw(st.sampled_from(NAMES)), "zone"))
    kw["required_workload_affinity"] = tuple(terms)
    if draw(st.integers(0, 3)) == 0:
        kw["spread"] = (spread_c("zone", draw(st.integers(1, 2))),)
    if draw(st.integers(0, 4)) == 0:
        kw["node_selector"] = (sel("tier", "exists"),)
    if draw(st.integers(0, 3)) == 0:
        kw["preferred_zones"] = ("z1",)
    if draw(st.integers(0, 3)) == 0:
        kw["preferred_workload_affinity"] = (
            WorkloadAffinity(draw(st.sampled_from(NAMES)), "node", anti=draw(st.booleans())),
        )
    return spec(
        name,
        cpu=f"{draw(st.sampled_from((250, 500, 1000, 1500, 3000)))}m",
        memory=f"{draw(st.sampled_from((128, 512, 1024, 3072)))}Mi",
        ports=(80,) if draw(st.booleans()) else (),
        **kw,
    )


@st.composite
def scenario(draw: Any) -> tuple[Any, ...]:
    nodes = draw(nodes_st())
    specs = {n: draw(spec_st(n)) for n in NAMES}
    existing = [
        Replica(f"e{i}", draw(st.sampled_from(NAMES)), draw(st.sampled_from(nodes)).id)
        for i in range(draw(st.integers(0, 5)))
    ]
    k = draw(st.integers(1, 3))
    groups = [(specs[NAMES[i]], draw(st.integers(0, 8))) for i in range(k)]
    strategy = draw(st.sampled_from(list(Strategy)))
    seed = draw(st.integers(0, 1000))
    return nodes, existing, specs, groups, strategy, seed


def _run(sc: tuple[Any, ...]) -> tuple[Any, ...]:
    nodes, existing, specs, groups, strategy, seed = sc
    known = {n: s for n, s in specs.items() if n not in {g[0].name for g in groups}}
    snap = Snapshot.build(nodes, existing, {**known, **specs})
    plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)
    return snap, plan


@SETTINGS
@given(scenario())
def test_vectorized_equals_reference(sc: tuple[Any, ...]) -> None:
    nodes, existing, specs, groups, strategy, seed = sc
    _, plan = _run(sc)
    ref = ReferenceScheduler(rng=random.Random(seed)).schedule_many(
        nodes, existing, specs, groups, strategy=strategy
    )
    assert plan == ref


@SETTINGS
@given(scenario())
def test_never_over_commits(sc: tuple[Any, ...]) -> None:
    nodes, _, specs, _, _, _ = sc
    snap, plan = _run(sc)
    used = {x.id: [0, 0, 0, 0] for x in nodes}
    for r in snap.replicas:
        res = specs[r.workload].resources
        u = used[r.node_id]
        used[r.node_id] = [u[0] + res.cpu_millis, u[1] + res.memory_bytes, u[2], u[3]]
    touched = set()
    for a in plan.assignments:
        res = specs[a.workload].resources
        u = used[a.node_id]
        used[a.node_id] = [u[0] + res.cpu_millis, u[1] + res.memory_bytes, u[2], u[3]]
        touched.add(a.node_id)
    for x in nodes:
        if x.id in touched:
            assert used[x.id][0] <= x.allocatable.cpu_millis
            assert used[x.id][1] <= x.allocatable.memory_bytes
            assert x.state is NodeState.READY


@SETTINGS
@given(scenario())
def test_never_violates_required_anti_affinity(sc: tuple[Any, ...]) -> None:
    nodes, _, specs, _, _, _ = sc
    snap, plan = _run(sc)
    by_id = {x.id: x for x in nodes}
    placed = [(r.workload, r.node_id, f"old-{r.id}") for r in snap.replicas]
    placed += [(a.workload, a.node_id, f"new-{a.workload}-{a.index}") for a in plan.assignments]
    for a in plan.assignments:
        me = f"new-{a.workload}-{a.index}"
        for t in specs[a.workload].placement.required_workload_affinity:
            if not t.anti:
                continue
            mine = by_id[a.node_id].label(t.topology_key)
            if mine is None:
                continue
            for w, nid, rid in placed:
                if w == t.workload and rid != me:
                    assert by_id[nid].label(t.topology_key) != mine, (a, t)


@SETTINGS
@given(scenario())
def test_rejection_counts_add_up(sc: tuple[Any, ...]) -> None:
    nodes, *_ = sc
    snap, plan = _run(sc)
    for u in plan.unplaced:
        r = u.rejections
        assert r.nodes == len(nodes)
        assert r.fit + sum(c for _, c in r.counts) == len(nodes)
    for s, _ in sc[3]:
        r = Scheduler().explain(snap, s).rejections
        assert r.fit + sum(c for _, c in r.counts) == len(nodes)


def _even_feasible(per_zone_cap: list[int], count: int) -> bool:
    base, extra = divmod(count, len(per_zone_cap))
    need = sorted([base + 1] * extra + [base] * (len(per_zone_cap) - extra), reverse=True)
    return all(a >= b for a, b in zip(sorted(per_zone_cap, reverse=True), need, strict=True))


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 2), st.sampled_from((1, 2, 4))), min_size=3, max_size=10),
    st.integers(1, 30),
    st.integers(0, 100),
)
def test_spread_even_whenever_feasible(
    layout: list[tuple[int, int]], count: int, seed: int
) -> None:
    # node i sits in zone layout[i][0] and holds layout[i][1] one-cpu replicas
    nodes = [node(f"n{i}", cpu=str(c), zone=f"z{z}") for i, (z, c) in enumerate(layout)]
    zones = sorted({z for z, _ in layout})
    cap = [sum(c for z, c in layout if z == k) for k in zones]
    plan = Scheduler(rng=random.Random(seed)).place(
        Snapshot.build(nodes), spec("w", cpu="1", memory="1Mi", spread=(spread_c("zone"),)), count
    )
    per = dict.fromkeys(zones, 0)
    for a in plan.assignments:
        per[layout[int(a.node_id[1:])][0]] += 1
    if _even_feasible(cap, count):
        assert plan.complete
        assert max(per.values()) - min(per.values()) <= 1
