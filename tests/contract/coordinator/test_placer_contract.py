"""The ``Placer`` contract (``cloudless.coordinator.deciders.reconcile.Placer``), run against the
seam's fake (``FakePlacer``) and the real one (``SchedulerPlacer``): what the reconciler
relies on, whichever placer it is given. Cases are tables with the arithmetic beside them.

Nodes below have 4 CPUs (4000m) and 8 GiB unless said otherwise; a ``web`` replica asks for
1000m and 1 GiB, so a node holds 4 of them by CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.deciders.reconcile import Placer
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.testing import node, spec
from cloudless.testing.fake_placer import FakePlacer

WEB = spec("web", cpu="1", memory="1Gi")


@pytest.fixture(params=[FakePlacer, SchedulerPlacer], ids=["fake", "scheduler"])
def placer(request: pytest.FixtureRequest) -> Placer:
    make: Callable[[], Placer] = request.param
    return make()


def on(node_id: str, i: int, workload: str = "web", **kw: object) -> Replica:
    return Replica(f"{workload}-{node_id}-{i}", workload, node_id=node_id, **kw)  # type: ignore[arg-type]


def used(
    nodes: Sequence[Node],
    replicas: Sequence[Replica],
    specs: dict[str, WorkloadSpec],
    extra: Sequence[str],
    extra_spec: WorkloadSpec,
) -> dict[str, Resources]:
    total: dict[str, Resources] = {n.id: Resources() for n in nodes}
    for r in replicas:
        if r.observed is not ReplicaState.LOST:
            total[r.node_id] = total[r.node_id] + specs[r.workload].resources
    for nid in extra:
        total[nid] = total[nid] + extra_spec.resources
    return total


# ---- place --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "replicas", "count", "placed"),
    [
        # 2 empty nodes x 4 slots = 8 >= 3: all 3 placed
        ([node("a"), node("b")], [], 3, 3),
        # count 0: nothing, no reason
        ([node("a")], [], 0, 0),
        # a holds 3 already (1 slot left), b holds 4 (full): 1 of 2 placed
        (
            [node("a"), node("b")],
            [*(on("a", i) for i in range(3)), *(on("b", i) for i in range(4))],
            2,
            1,
        ),
        # one node of 2 CPUs: 2 slots for 5 asked
        ([node("a", cpu="2")], [], 5, 2),
        # no node ready: cordoned, offline, failed -> 0 placed
        (
            [
                node("a", state=NodeState.CORDONED),
                node("b", state=NodeState.OFFLINE),
                node("c", state=NodeState.FAILED),
            ],
            [],
            2,
            0,
        ),
        # stopping replicas still run: a's 4 (desired stopped) hold all 4 slots -> 0
        ([node("a")], [on("a", i, desired=DesiredState.STOPPED) for i in range(4)], 4, 0),
        # lost replicas (their node went offline and came back ready) hold no room either
        ([node("a")], [on("a", i, observed=ReplicaState.LOST) for i in range(4)], 4, 4),
    ],
)
def test_place_fills_ready_nodes_within_their_room(
    placer: Placer, nodes: list[Node], replicas: list[Replica], count: int, placed: int
) -> None:
    specs = {"web": WEB}
    res = placer.place(nodes, replicas, specs, WEB, count)
    assert len(res.node_ids) == placed
    ready = {n.id for n in nodes if n.state is NodeState.READY}
    assert set(res.node_ids) <= ready
    room = {n.id: n.allocatable for n in nodes}
    for nid, total in used(nodes, replicas, specs, res.node_ids, WEB).items():
        assert total.fits(room[nid]), (nid, total)
    # every "no" carries a reason; a full placement carries none
    assert bool(res.reason) is (placed < count), res.reason


@pytest.mark.parametrize(
    ("max_per_node", "existing", "count", "placed"),
    [
        # 3 nodes x at most 1 = 3 slots, none used: 3 of 5
        (1, 0, 5, 3),
        # at most 2 per node, a already holds 2: b and c take 2 each = 4 of 6
        (2, 2, 6, 4),
    ],
)
def test_place_respects_max_per_node(
    placer: Placer, max_per_node: int, existing: int, count: int, placed: int
) -> None:
    s = spec("web", cpu="100m", memory="64Mi", max_per_node=max_per_node)
    nodes = [node("a"), node("b"), node("c")]
    replicas = [on("a", i) for i in range(existing)]
    res = placer.place(nodes, replicas, {"web": s}, s, count)
    assert len(res.node_ids) == placed
    per_node = {n.id: sum(1 for r in replicas if r.node_id == n.id) for n in nodes}
    for nid in res.node_ids:
        per_node[nid] += 1
    assert max(per_node.values()) <= max_per_node
    assert res.reason


def test_other_workloads_hold_room(placer: Placer) -> None:
    # a holds 3 "db" replicas of 1000m: 1 slot left for web; b is empty: 4 -> 5 of 5 placed
    db = spec("db", cpu="1", memory="1Gi")
    nodes = [node("a"), node("b")]
    replicas = [on("a", i, workload="db") for i in range(3)]
    res = placer.place(nodes, replicas, {"web": WEB, "db": db}, WEB, 5)
    assert sorted(res.node_ids) == ["a", "b", "b", "b", "b"]
    # one more does not fit anywhere, and says why
    res = placer.place(nodes, replicas, {"web": WEB, "db": db}, WEB, 6)
    assert len(res.node_ids) == 5 and res.reason


def test_place_does_not_change_its_inputs(placer: Placer) -> None:
    nodes = [node("a"), node("b")]
    replicas = [on("a", 0)]
    specs = {"web": WEB}
    before = (list(nodes), list(replicas), dict(specs))
    first = placer.place(nodes, replicas, specs, WEB, 3)
    assert (nodes, replicas, specs) == before
    # and what it chose is not taken as placed: asking again gives as many
    assert len(placer.place(nodes, replicas, specs, WEB, 3).node_ids) == len(first.node_ids)


# ---- rank ---------------------------------------------------------------------------------


def test_rank_is_a_permutation_of_the_candidates(placer: Placer) -> None:
    nodes = [node("a"), node("b"), node("c")]
    replicas = [on("a", 0), on("a", 1), on("b", 0), on("c", 0)]
    ranked = placer.rank(nodes, replicas, {"web": WEB}, WEB, replicas)
    assert sorted(r.id for r in ranked) == sorted(r.id for r in replicas)
    assert placer.rank(nodes, replicas, {"web": WEB}, WEB, []) == []


@pytest.mark.parametrize("gone", [NodeState.CORDONED, NodeState.OFFLINE, NodeState.DRAINING])
def test_rank_puts_replicas_on_nodes_that_would_not_take_them_last(
    placer: Placer, gone: NodeState
) -> None:
    # 4 candidates, the one on node "a" (no longer ready) must be the first to go
    nodes = [node("a", state=gone), node("b"), node("c"), node("d")]
    replicas = [on("a", 0), on("b", 0), on("c", 0), on("d", 0)]
    ranked = placer.rank(nodes, replicas, {"web": WEB}, WEB, replicas)
    assert ranked[-1].node_id == "a"
