"""Reconciling workloads with volumes: stable ids, placement back on the data's node, node
loss under wait / recreate, scale down. A cluster view in, actions out (fake placer)."""

from __future__ import annotations

import pytest

from cloudless.coordinator.deciders.reconcile import (
    Action,
    CreateReplica,
    DeleteReplica,
    SetUnplaced,
    UpdateReplica,
    reconcile,
)
from cloudless.coordinator.deciders.stateful import ordinal_of
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.ids import SequentialIds
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.volumes import NodeLoss, Volume
from cloudless.model.workload import WorkloadSpec
from cloudless.testing.fake_placer import FakePlacer

S = NodeState
R = ReplicaState
BIG = Resources(4000, 8 << 30, 100 << 30, 10**9)


def node(i: int, state: NodeState = S.READY) -> Node:
    return Node.make(f"n{i}", state=state, allocatable=BIG, capacity=BIG)


def db(replicas: int = 3, loss: NodeLoss = NodeLoss.WAIT, version: int = 1) -> WorkloadRecord:
    spec = WorkloadSpec(
        name="db",
        image="db:1",
        replicas=replicas,
        resources=Resources(100, 1 << 20),
        volumes=(Volume("data", "/data"),),
        on_node_loss=loss,
    )
    return WorkloadRecord(spec=spec, version=version)


def rep(i: int, node_id: str, observed: ReplicaState = R.RUNNING, **kw: object) -> Replica:
    return Replica(
        id=f"db-{i}", workload="db", node_id=node_id, observed=observed, spec_version=1, **kw
    )  # type: ignore[arg-type]


def run(nodes: list[Node], rec: WorkloadRecord, replicas: list[Replica]) -> list[Action]:
    view = ClusterView(
        nodes={n.id: n for n in nodes},
        workloads={rec.name: rec},
        replicas={r.id: r for r in replicas},
    )
    return reconcile(view, FakePlacer(), SequentialIds(), now=100.0)


def created(actions: list[Action]) -> dict[str, str]:
    return {a.replica.id: a.replica.node_id for a in actions if isinstance(a, CreateReplica)}


def deleted(actions: list[Action]) -> list[str]:
    return [a.replica_id for a in actions if isinstance(a, DeleteReplica)]


def unplaced(actions: list[Action]) -> tuple[int, str] | None:
    for a in actions:
        if isinstance(a, SetUnplaced):
            return a.count, a.reason
    return None


def test_new_workload_gets_ordinals_spread_by_the_placer() -> None:
    # fake placer: fewest replicas of the workload first, then node id -> n1, n2, n3
    acts = run([node(1), node(2), node(3)], db(3), [])
    assert created(acts) == {"db-0": "n1", "db-1": "n2", "db-2": "n3"}


def test_a_missing_ordinal_is_refilled_lowest_first() -> None:
    # db-1 is gone (deleted by an earlier round); db-0 and db-2 run on n1, n2: the placer
    # picks n3 (no replica of db yet), and the id is db-1, not a fresh random one
    acts = run([node(1), node(2), node(3)], db(3), [rep(0, "n1"), rep(2, "n2")])
    assert created(acts) == {"db-1": "n3"}


@pytest.mark.parametrize(
    ("state", "loss", "want_deleted", "want_unplaced"),
    [
        # offline, wait: the record stays (it is marked lost), nothing placed, the reason names
        # the node it waits for
        (S.OFFLINE, NodeLoss.WAIT, [], (1, "db-1 waits for node n2 holding its volumes")),
        # failed, wait: even the generic "lost on a failed node is deleted" rule spares it
        (S.FAILED, NodeLoss.WAIT, [], (1, "db-1 waits for node n2 holding its volumes (failed")),
        # offline, recreate: deleted now, recreated empty elsewhere next round
        (S.OFFLINE, NodeLoss.RECREATE, ["db-1"], None),
        # removed: it never comes back, recreated whatever the choice
        (S.REMOVED, NodeLoss.WAIT, ["db-1"], None),
    ],
)
def test_node_loss(
    state: NodeState,
    loss: NodeLoss,
    want_deleted: list[str],
    want_unplaced: tuple[int, str] | None,
) -> None:
    nodes = [node(1), node(2, state), node(3)]
    replicas = [rep(0, "n1"), rep(1, "n2", R.LOST), rep(2, "n3")]
    acts = run(nodes, db(3, loss), replicas)
    assert deleted(acts) == want_deleted
    assert created(acts) == {}  # never a second db-1 while its record exists
    got = unplaced(acts)
    if want_unplaced is None:
        assert got is None
    else:
        assert got is not None and got[0] == want_unplaced[0] and want_unplaced[1] in got[1]


def test_after_recreate_the_ordinal_goes_to_another_node() -> None:
    # round after the delete above: db-1 is missing, n2 offline -> placed on a ready node;
    # n1 and n3 hold one each, fake placer breaks the tie by id -> n1
    nodes = [node(1), node(2, S.OFFLINE), node(3)]
    acts = run(nodes, db(3, NodeLoss.RECREATE), [rep(0, "n1"), rep(2, "n3")])
    assert created(acts) == {"db-1": "n1"}


def test_node_back_means_replica_back_in_place() -> None:
    # n2 is ready again and its agent reports db-1 running: nothing to do at all
    acts = run([node(1), node(2), node(3)], db(3), [rep(0, "n1"), rep(1, "n2"), rep(2, "n3")])
    assert acts == []


def test_scale_down_stops_the_highest_ordinals_and_up_runs_them_again() -> None:
    replicas = [rep(0, "n1"), rep(1, "n2"), rep(2, "n3")]
    acts = run([node(1), node(2), node(3)], db(1), replicas)
    stopped = [
        a.replica.id
        for a in acts
        if isinstance(a, UpdateReplica) and a.replica.desired is DesiredState.STOPPED
    ]
    assert stopped == ["db-1", "db-2"]
    # scaled back to 3 before db-2 finished stopping: it is asked to run again, on n3
    replicas = [rep(0, "n1"), rep(2, "n3", desired=DesiredState.STOPPED)]
    acts = run([node(1), node(2), node(3)], db(3), replicas)
    again = [a.replica for a in acts if isinstance(a, UpdateReplica)]
    assert [(r.id, r.desired, r.node_id) for r in again] == [("db-2", DesiredState.RUNNING, "n3")]
    assert created(acts) == {"db-1": "n2"}  # the placer: fewest of db first (n2 has none)


def test_a_spec_change_rolls_in_place() -> None:
    replicas = [rep(0, "n1"), rep(1, "n2"), rep(2, "n3")]
    acts = run([node(1), node(2), node(3)], db(3, version=2), replicas)
    rolled = [a.replica for a in acts if isinstance(a, UpdateReplica)]
    # batch max(1, 3 // 4) = 1: db-0 first, same id, same node, new version
    assert [(r.id, r.node_id, r.spec_version) for r in rolled] == [("db-0", "n1", 2)]


@pytest.mark.parametrize(
    ("rid", "ordinal"),
    [("db-0", 0), ("db-12", 12), ("db-01", None), ("db-x", None), ("dbx-1", None), ("db-", None)],
)
def test_ordinal_of(rid: str, ordinal: int | None) -> None:
    assert ordinal_of("db", rid) == ordinal
