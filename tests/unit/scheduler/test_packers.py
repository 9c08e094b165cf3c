"""Packers on small tables; node counts worked out beside each case."""

from __future__ import annotations

from cloudless.scheduler import Snapshot, pack, pack_best_fit, pack_with_spread
from cloudless.scheduler.testing import node, spec


def test_first_fit_decreasing_fills_in_use_bins_first() -> None:
    # items 3,3,2,2,1,1 cpu (12 total) on four 4-cpu nodes -> sizes desc:
    # 3->A, 3->B, 2->C, 2->C (C full), 1->A, 1->B: 3 nodes used, optimum is 3 (12/4)
    snap = Snapshot.build([node(f"n{i}") for i in range(4)])
    groups = [(spec("s1", cpu="1"), 2), (spec("s2", cpu="2"), 2), (spec("s3", cpu="3"), 2)]
    plan = pack(snap, groups)
    assert plan.complete and len(plan.nodes_used()) == 3


def test_best_fit_picks_tightest_node_in_use() -> None:
    # n0 holds a 3-cpu item (1 free), n1 a 2-cpu item (2 free): a 1-cpu item goes to n0
    # (leftover 0 < 0.25 on n1)
    snap = Snapshot.build([node("n0"), node("n1"), node("n2")])
    plan = pack_best_fit(
        snap, [(spec("big", cpu="3"), 1), (spec("mid", cpu="2.5"), 1), (spec("one", cpu="1"), 1)]
    )
    where = {a.workload: a.node_id for a in plan.assignments}
    assert where["one"] == where["big"]
    assert len(plan.nodes_used()) == 2


def test_packers_never_over_commit() -> None:
    # 10 x 1.5 cpu on three 4-cpu nodes: 2 per node fit (3 cpu), 6 placed, 4 unplaced
    snap = Snapshot.build([node(f"n{i}") for i in range(3)])
    for fn in (pack, pack_best_fit):
        plan = fn(snap, [(spec("w", cpu="1.5"), 10)])
        assert len(plan.assignments) == 6
        assert plan.unplaced[0].count == 4
        assert plan.unplaced[0].reason == "0/3 nodes fit: 3 insufficient cpu"


def test_spread_by_region() -> None:
    # 2 regions (3 nodes in r1, 1 in r2), 4 replicas -> 2 + 2
    nodes = [
        node("a", region="r1"),
        node("b", region="r1"),
        node("c", region="r1"),
        node("d", region="r2"),
    ]
    plan = pack_with_spread(Snapshot.build(nodes), spec(cpu="1"), 4, topology_key="region")
    assert plan.node_ids().count("d") == 2


def test_spread_when_even_is_infeasible_places_what_skew_allows() -> None:
    # z2 has one 1-cpu node: z1 may run at most 1 + max_skew 1 = 2 replicas
    nodes = [node("a", zone="z1"), node("b", zone="z1"), node("c", zone="z2", cpu="1")]
    plan = pack_with_spread(Snapshot.build(nodes), spec(cpu="1"), 5)
    assert len(plan.assignments) == 3
    assert "spread on zone would exceed max_skew 1" in plan.unplaced[0].reason
