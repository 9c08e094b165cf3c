"""Hypothesis properties against an exact solver (PuLP + CBC) on small instances:

- on mixed fleets (phones, laptops, servers, VPS), whenever every replica fits, the packers
  and the score strategy place every replica;
- with constraints (selectors, anti-affinity between workloads, one per node, all in one
  node or zone) the repair never places fewer replicas than the greedy pass, and it places
  every replica of the generator's instances that trap the greedy pass (a table). How often
  a feasible plan stays incomplete is measured, not asserted: bench/scheduler/constrained.py.
"""

from __future__ import annotations

import random
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cloudless.scheduler.search as search_mod
from bench.scheduler.constrained import feasible
from bench.scheduler.constrained import instance as constrained_instance
from bench.scheduler.mixed import instance as mixed_instance
from bench.scheduler.mixed import optimal_nodes
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Scheduler, Snapshot, Strategy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
# The same examples on every run (derandomize): instances the repair still cannot complete
# are pinned below as known bugs, and CI must not pass or fail by the draw.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(3, 8))
# A score plan the reorder repair cannot complete (every order it reaches spreads memory too
# thin); the packers' node choice, tried with the rest of the budget, completes it.
@example(seed=100001, n=3)
def test_mixed_fleet_complete_whenever_it_fits(seed: int, n: int) -> None:
    nodes, groups = mixed_instance(random.Random(seed), n)
    opt = optimal_nodes(nodes, groups, time_limit=10)
    if opt is None:
        return
    snap = Snapshot.build(nodes)
    for strategy in Strategy:
        plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)
        assert plan.complete, (strategy, plan.unplaced)
        assert len(plan.nodes_used()) >= opt


def _greedy(
    snap: Snapshot, groups: list[tuple[WorkloadSpec, int]], seed: int, strategy: Strategy
) -> int:
    """Replicas placed by the first greedy pass alone (no repair)."""
    with patch.object(search_mod, "MAX_REPAIRS", 0):
        plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)
    return len(plan.assignments)


@SETTINGS
@given(st.integers(0, 10**6), st.integers(3, 10))
def test_repair_never_places_fewer_than_the_greedy_pass(seed: int, n: int) -> None:
    nodes, groups = constrained_instance(random.Random(seed), n)
    snap = Snapshot.build(nodes)
    for strategy in Strategy:
        plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)
        assert len(plan.assignments) >= _greedy(snap, groups, seed, strategy)


# Instances (seed, nodes) of the generator where the greedy pass leaves replicas unplaced
# although the exact solver places all of them; the repair must place them all.
TRAPPED = [(5, 9), (13, 17), (31, 5), (46, 20), (82, 26), (179, 33), (710, 3)]


@pytest.mark.parametrize(("seed", "n"), TRAPPED)
def test_repair_places_what_the_greedy_pass_traps(seed: int, n: int) -> None:
    nodes, groups = constrained_instance(random.Random(seed), n)
    assert feasible(nodes, groups, time_limit=10)
    snap = Snapshot.build(nodes)
    total = sum(c for _, c in groups)
    assert _greedy(snap, groups, seed, Strategy.SCORE) < total
    plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups)
    assert plan.complete


@pytest.mark.parametrize(
    ("seed", "n", "strategy"),
    [
        (100152, 6, Strategy.SCORE),
        (100187, 6, Strategy.SCORE),
        (100137, 7, Strategy.SPREAD),
        (100225, 8, Strategy.SPREAD),
    ],
)
@pytest.mark.xfail(
    strict=True,
    reason="known bug: the bounded repair (reorders, then the packers' node choice) leaves "
    "replicas unplaced on these mixed fleets although an exact placement exists",
)
def test_known_instances_the_repair_cannot_complete(seed: int, n: int, strategy: Strategy) -> None:
    nodes, groups = mixed_instance(random.Random(seed), n)
    assert optimal_nodes(nodes, groups, time_limit=10) is not None
    plan = Scheduler(rng=random.Random(seed)).schedule_many(
        Snapshot.build(nodes), groups, strategy=strategy
    )
    assert plan.complete, plan.unplaced
