"""Hypothesis properties against an exact solver (PuLP + CBC) on small instances:

- on mixed fleets (phones, laptops, servers, VPS), whenever every replica fits, the packers
  and the score strategy place every replica;
- with constraints (selectors, anti-affinity between workloads, one per node, all in one
  node or zone), whenever the solver finds a full placement, every strategy finds one.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scheduler.constrained import feasible
from bench.scheduler.constrained import instance as constrained_instance
from bench.scheduler.mixed import instance as mixed_instance
from bench.scheduler.mixed import optimal_nodes
from cloudless.scheduler import Scheduler, Snapshot, Strategy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.integers(0, 10**6), st.integers(3, 8))
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


@SETTINGS
@given(st.integers(0, 10**6), st.integers(3, 10))
def test_constrained_complete_whenever_feasible(seed: int, n: int) -> None:
    nodes, groups = constrained_instance(random.Random(seed), n)
    if not feasible(nodes, groups, time_limit=10):
        return
    snap = Snapshot.build(nodes)
    for strategy in Strategy:
        plan = Scheduler(rng=random.Random(seed)).schedule_many(snap, groups, strategy=strategy)
        assert plan.complete, (strategy, plan.unplaced)
