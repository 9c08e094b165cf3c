"""The scheduler contract, run against both implementations: the vectorised ``Scheduler``
and the plain-Python ``ReferenceScheduler``. Any future implementation (e.g. a native one)
plugs in here by adding an adapter."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Plan, Scheduler, Snapshot, Strategy
from cloudless.scheduler.reference import ReferenceScheduler
from cloudless.scheduler.testing import (
    anti,
    generate_cluster,
    generate_workloads,
    node,
    replica,
    spec,
)
from cloudless.scheduler.testing import spread as spread_c

Run = Callable[..., Plan]


def vectorized(
    nodes: Sequence[Node],
    reps: Sequence[Replica],
    specs: dict[str, Any],
    groups: list[tuple[WorkloadSpec, int]],
    seed: int = 0,
    strategy: Strategy = Strategy.SCORE,
) -> Plan:
    snap = Snapshot.build(nodes, reps, specs)
    return Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)


def reference(
    nodes: Sequence[Node],
    reps: Sequence[Replica],
    specs: dict[str, Any],
    groups: list[tuple[WorkloadSpec, int]],
    seed: int = 0,
    strategy: Strategy = Strategy.SCORE,
) -> Plan:
    return ReferenceScheduler(rng=random.Random(seed)).schedule_many(
        nodes, reps, specs, groups, strategy=strategy
    )


@pytest.fixture(params=[vectorized, reference], ids=["vectorized", "reference"])
def run(request: pytest.FixtureRequest) -> Run:
    fn: Run = request.param
    return fn


def test_places_within_capacity(run: Run) -> None:
    nodes = [node("a", cpu="2"), node("b", cpu="2")]
    plan = run(nodes, [], {}, [(spec(cpu="1"), 5)])
    assert len(plan.assignments) == 4
    assert plan.unplaced[0].reason == "0/2 nodes fit: 2 insufficient cpu"


def test_refuses_unready_nodes_with_reasons(run: Run) -> None:
    nodes = [node("a", state=NodeState.CORDONED), node("b", state=NodeState.OFFLINE)]
    plan = run(nodes, [], {}, [(spec(), 1)])
    assert plan.unplaced[0].reason == "0/2 nodes fit: 1 cordoned, 1 offline"


def test_one_per_node_anti_affinity(run: Run) -> None:
    s = spec("w", required_workload_affinity=(anti("w", "node"),))
    plan = run([node("a"), node("b")], [replica("w0", "w", "a")], {"w": s}, [(s, 2)])
    assert plan.node_ids() == ["b"]


def test_even_spread(run: Run) -> None:
    nodes = [node(f"{z}{i}", zone=z) for z in ("x", "y", "z") for i in range(2)]
    s = spec("w", spread=(spread_c("zone"),))
    plan = run(nodes, [], {}, [(s, 7)])
    per = {z: sum(a.node_id.startswith(z) for a in plan.assignments) for z in "xyz"}
    assert sorted(per.values()) == [2, 2, 3]


def test_deterministic(run: Run) -> None:
    nodes = [node(f"n{i}") for i in range(10)]
    assert run(nodes, [], {}, [(spec(), 3)], 5) == run(nodes, [], {}, [(spec(), 3)], 5)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_implementations_agree_on_generated_cluster(strategy: Strategy) -> None:
    nodes = generate_cluster(150, seed=4)
    wls = generate_workloads(12, seed=5)
    groups = [(w, 10) for w in wls]
    assert vectorized(nodes, [], {}, groups, 3, strategy) == reference(
        nodes, [], {}, groups, 3, strategy
    )


def test_place_with_existing_and_locality_hint_agree() -> None:
    nodes = generate_cluster(60, seed=8)
    s = spec("w", cpu="500m", max_per_node=1, spread=(spread_c("zone"),))
    reps = [replica(f"w{i}", "w", nodes[i].id) for i in range(0, 12, 3)]
    existing = reps[:2]  # the caller counts only two of them as live

    def hint(_: WorkloadSpec) -> dict[str, float]:
        return {nodes[5].id: 1.0, nodes[7].id: 0.8}

    snap = Snapshot.build(nodes, reps, {"w": s})
    a = Scheduler(rng=random.Random(2), locality_hint=hint).place(snap, s, 9, existing=existing)
    b = ReferenceScheduler(rng=random.Random(2), locality_hint=hint).place(
        nodes, reps, {"w": s}, s, 9, existing=existing
    )
    assert a == b and len(a.assignments) == 9
