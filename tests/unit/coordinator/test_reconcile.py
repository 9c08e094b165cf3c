"""Reconciliation tables: a cluster view in, actions out (fake placer)."""

from __future__ import annotations

from dataclasses import replace

from cloudless.coordinator.deciders.reconcile import (
    Action,
    CreateReplica,
    DeleteReplica,
    DeleteWorkload,
    SetUnplaced,
    UpdateReplica,
    reconcile,
)
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.ids import SequentialIds
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import Placement, WorkloadSpec
from cloudless.testing.fake_placer import FakePlacer

S = NodeState
R = ReplicaState
BIG = Resources(4000, 8 << 30, 100 << 30, 10**9)


def node(i: int, state: NodeState = S.READY) -> Node:
    return Node.make(f"n{i}", state=state, allocatable=BIG, capacity=BIG, zone=f"z{i % 3}")


def wl(replicas: int = 3, version: int = 1, deleted: bool = False, **kw: object) -> WorkloadRecord:
    spec = WorkloadSpec(
        name="web",
        image="busybox",
        replicas=replicas,
        resources=Resources(100, 1 << 20),
        **kw,  # type: ignore[arg-type]
    )
    return WorkloadRecord(spec=spec, version=version, deleted=deleted)


def rep(i: int, node_id: str, observed: ReplicaState = R.RUNNING, **kw: object) -> Replica:
    return Replica(
        id=f"web-r{i}",
        workload="web",
        node_id=node_id,
        observed=observed,
        spec_version=1,
        **kw,  # type: ignore[arg-type]
    )


def run(nodes: list[Node], rec: WorkloadRecord, replicas: list[Replica]) -> list[Action]:
    view = ClusterView(
        nodes={n.id: n for n in nodes},
        workloads={rec.name: rec},
        replicas={r.id: r for r in replicas},
    )
    return reconcile(view, FakePlacer(), SequentialIds(), now=100.0)


def creates(actions: list[Action]) -> list[str]:
    return [a.replica.node_id for a in actions if isinstance(a, CreateReplica)]


def stops(actions: list[Action]) -> list[str]:
    return [
        a.replica.id
        for a in actions
        if isinstance(a, UpdateReplica) and a.replica.desired is DesiredState.STOPPED
    ]


def test_places_missing_replicas() -> None:
    acts = run([node(0), node(1), node(2)], wl(3), [])
    assert creates(acts) == ["n0", "n1", "n2"]  # fewest-of-workload first, then id
    [c] = [a for a in acts if isinstance(a, CreateReplica)][:1]
    assert c.replica.spec_version == 1 and c.replica.id == "web-1"


def test_steady_state_does_nothing() -> None:
    reps = [rep(0, "n0"), rep(1, "n1"), rep(2, "n2")]
    assert run([node(0), node(1), node(2)], wl(3), reps) == []


def test_offline_node_replicas_are_lost_and_replaced() -> None:
    reps = [rep(0, "n0"), rep(1, "n1"), rep(2, "n2")]
    acts = run([node(0), node(1), node(2, S.OFFLINE), node(3)], wl(3), reps)
    lost = [
        a.replica.id for a in acts if isinstance(a, UpdateReplica) and a.replica.observed is R.LOST
    ]
    assert lost == ["web-r2"]
    assert creates(acts) == ["n3"]  # n3 has no replica of web yet


def test_lost_replica_on_failed_node_is_deleted() -> None:
    reps = [rep(0, "n0"), rep(1, "n1"), rep(2, "n2", R.LOST), rep(3, "n3")]
    acts = run([node(0), node(1), node(2, S.FAILED), node(3)], wl(3), reps)
    assert [a.replica_id for a in acts if isinstance(a, DeleteReplica)] == ["web-r2"]
    assert creates(acts) == []


def test_node_back_after_replacement_stops_exactly_the_extras() -> None:
    # n2 came back and reports r2 running again; its replacement r3 runs on n3.
    # 4 live replicas, 3 wanted: exactly one is stopped, nothing else restarts.
    reps = [rep(0, "n0"), rep(1, "n1"), rep(2, "n2"), rep(3, "n3")]
    acts = run([node(i) for i in range(4)], wl(3), reps)
    assert len(stops(acts)) == 1
    assert creates(acts) == []
    assert all(isinstance(a, UpdateReplica) for a in acts)


def test_running_replicas_are_kept_over_pending_ones() -> None:
    reps = [rep(0, "n0", R.PENDING), rep(1, "n1"), rep(2, "n2"), rep(3, "n3")]
    assert stops(run([node(i) for i in range(4)], wl(3), reps)) == ["web-r0"]


def test_scale_down_and_stopped_replicas_deleted() -> None:
    reps = [rep(0, "n0"), rep(1, "n1"), rep(2, "n2")]
    acts = run([node(0), node(1), node(2)], wl(1), reps)
    assert sorted(stops(acts)) == ["web-r1", "web-r2"]  # fake ranks by node id
    done = [rep(1, "n1", R.EXITED, desired=DesiredState.STOPPED), rep(0, "n0")]
    acts = run([node(0), node(1)], wl(1), done)
    assert [a.replica_id for a in acts if isinstance(a, DeleteReplica)] == ["web-r1"]


def test_unplaceable_reported_once() -> None:
    acts = run([node(0, S.CORDONED)], wl(2), [])
    [u] = [a for a in acts if isinstance(a, SetUnplaced)]
    assert u.count == 2 and "nodes fit" in u.reason
    rec = replace(wl(2), unplaced=2, unplaced_reason=u.reason)
    assert run([node(0, S.CORDONED)], rec, []) == []  # unchanged: no repeated write


def test_max_per_node() -> None:
    rec = wl(3, placement=Placement(max_per_node=1))
    acts = run([node(0), node(1)], rec, [])
    assert creates(acts) == ["n0", "n1"]
    assert [a.count for a in acts if isinstance(a, SetUnplaced)] == [1]


def test_drain_replaces_first_then_stops_once_ready() -> None:
    reps = [rep(0, "n0", ready=True), rep(1, "n1", ready=True)]
    nodes = [node(0, S.DRAINING), node(1), node(2)]
    acts = run(nodes, wl(2), reps)
    assert creates(acts) == ["n2"] and stops(acts) == []
    # running but not ready yet (its readiness check has not passed): the old one stays
    reps.append(rep(2, "n2"))
    assert stops(run(nodes, wl(2), reps)) == []
    reps[-1] = rep(2, "n2", ready=True)
    assert stops(run(nodes, wl(2), reps)) == ["web-r0"]


def test_rolling_update_in_batches() -> None:
    reps = [rep(i, f"n{i}") for i in range(8)]
    nodes = [node(i) for i in range(8)]
    acts = run(nodes, wl(8, version=2), reps)
    bumped = [a.replica.id for a in acts if isinstance(a, UpdateReplica)]
    assert bumped == ["web-r0", "web-r1"]  # 8 // 4 = 2 at a time
    reps[0] = replace(reps[0], spec_version=2, observed=R.PENDING)
    reps[1] = replace(reps[1], spec_version=2, observed=R.RUNNING, ready=True)
    acts = run(nodes, wl(8, version=2), reps)
    # r1 is healthy (running, ready, since t=0: 100 s >= min_ready 10 s), r0 is in flight:
    # room = 2 - 1 = 1
    assert [a.replica.id for a in acts if isinstance(a, UpdateReplica)] == ["web-r2"]


def test_deleted_workload_stops_then_goes() -> None:
    reps = [rep(0, "n0")]
    acts = run([node(0)], wl(1, deleted=True), reps)
    assert stops(acts) == ["web-r0"]
    assert run([node(0)], wl(1, deleted=True), []) == [DeleteWorkload("web")]


def test_orphan_replica_deleted() -> None:
    view = ClusterView(
        nodes={"n0": node(0)},
        workloads={},
        replicas={"x-1": Replica(id="x-1", workload="x", node_id="n0")},
    )
    acts = reconcile(view, FakePlacer(), SequentialIds(), 0.0)
    assert acts == [DeleteReplica("x-1", "x", "its workload no longer exists")]


def test_drained_node_becomes_cordoned() -> None:
    from cloudless.coordinator.deciders.reconcile import SetNodeState

    acts = run([node(0, S.DRAINING), node(1)], wl(1), [rep(1, "n1")])
    assert SetNodeState("n0", S.CORDONED, "drain finished") in acts


def test_rollout_waits_for_the_batch_to_run_steadily() -> None:
    # now = 100; a replica on the new version running (and ready: no readiness check) since
    # 95 (5 s < min_ready 10 s) is still in flight: 8 // 4 = 2 per batch, 2 in flight -> none.
    reps = [rep(i, f"n{i}") for i in range(8)]
    reps[0] = replace(reps[0], spec_version=2, observed=R.RUNNING, updated_at=95.0, ready=True)
    reps[1] = replace(reps[1], spec_version=2, observed=R.RUNNING, updated_at=95.0, ready=True)
    acts = run([node(i) for i in range(8)], wl(8, version=2), reps)
    assert [a for a in acts if isinstance(a, UpdateReplica)] == []
    # once they have run for 10 s, the next batch goes
    reps[0] = replace(reps[0], updated_at=90.0)
    reps[1] = replace(reps[1], updated_at=90.0)
    acts = run([node(i) for i in range(8)], wl(8, version=2), reps)
    assert [a.replica.id for a in acts if isinstance(a, UpdateReplica)] == ["web-r2", "web-r3"]


def test_scaling_keeps_the_version_other_changes_bump_it() -> None:
    rec = wl(3)
    assert rec.with_spec(replace(rec.spec, replicas=5), 1.0).version == 1  # restarts nothing
    assert rec.with_spec(replace(rec.spec, image="busybox:2"), 1.0).version == 2
    assert rec.with_spec(rec.spec, 1.0) is rec


def test_start_first_roll_out_walks_to_the_new_version() -> None:
    """3 replicas, max_surge 1, max_unavailable 0: each round, the actions are applied and the
    new replicas become running and ready; at no point are fewer than 3 available or more
    than 4 wanted running."""
    from cloudless.model.rollout import RolloutState, UpdatePolicy

    v1 = wl(3, update=UpdatePolicy(max_surge=1, min_ready_s=0.0))
    rec = v1.next_version(replace(v1.spec, image="busybox:2"), at=50.0)
    assert rec.rollout.state is RolloutState.PROGRESSING
    nodes = [node(i) for i in range(4)]
    reps = {r.id: r for r in (rep(i, f"n{i}", ready=True) for i in range(3))}
    ids = SequentialIds()
    rounds = []
    for _ in range(10):
        view = ClusterView({n.id: n for n in nodes}, {rec.name: rec}, dict(reps))
        acts = reconcile(view, FakePlacer(), ids, now=100.0)
        made, stopped = creates(acts), stops(acts)
        rounds.append((len(made), len(stopped)))
        for a in acts:
            if isinstance(a, CreateReplica):  # started and ready by the next round
                reps[a.replica.id] = replace(a.replica, observed=R.RUNNING, ready=True)
            elif isinstance(a, UpdateReplica) and a.replica.desired is DesiredState.STOPPED:
                del reps[a.replica.id]  # stopped and gone
        running = list(reps.values())
        assert 3 <= len(running) <= 4, running
        if not made and not stopped:
            break
    # 1 new; then 1 stopped + 1 new, twice; then the last old one stopped.
    assert rounds[:4] == [(1, 0), (1, 1), (1, 1), (0, 1)], rounds
    assert sorted(r.spec_version for r in reps.values()) == [2, 2, 2]
