"""Reconciliation: desired workloads vs observed replicas, decided in pure code.

``reconcile(view, placer, ids, now)`` returns the actions that move the cluster towards what the
user asked for. The caller (the leader's reconcile loop) applies them to the store in fenced
transactions; agents act on the store's new contents. Rules, per workload:

* a replica on a node that is offline, failed or gone is marked ``lost``; it no longer counts;
  a lost replica on a failed or removed node is deleted (its node will not run it again);
* a workload with fewer live replicas than asked gets new ones, placed by the scheduler; the
  ones that cannot be placed are reported with the scheduler's reasons;
* with more live replicas than asked (scale down, or a lost node came back after its replicas
  were replaced) the placer ranks them and the best ``replicas`` are kept, running ones first:
  the extras are stopped, never all restarted;
* replicas on a draining node get replacements first and are stopped once enough replicas
  are ready elsewhere (make-before-break); planned departures and owner-reserved hours drain
  nodes and bound the wait by a deadline (``departures.decide_departures`` has the rules);
* a changed spec rolls out in place, in batches gated on readiness, or start first with
  ``update.max_surge`` (new replicas placed beside the old, which are stopped as the new ones
  become ready, so the count runs over ``replicas`` on purpose), and rolls back automatically
  when a batch fails (``rollout.decide_rollout`` has the rules);
* a deleted workload has all its replicas stopped, then its record removed;
* a workload with volumes keeps stable replica ids on the nodes holding their data
  (``stateful``: its own rules for placement, node loss and scale down).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from cloudless.coordinator.deciders.departures import SetDeparture, decide_departures
from cloudless.coordinator.deciders.rollout import RolloutPlan, decide_rollout, surging
from cloudless.coordinator.deciders.stateful import keep_lost, plan_stateful, replica_id
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.ids import IdSource
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.rollout import Rollout
from cloudless.model.workload import WorkloadSpec


@dataclass(frozen=True)
class PlaceResult:
    node_ids: tuple[str, ...]
    reason: str = ""  # why the rest could not be placed ("0/5 nodes fit: ...")


class Placer(Protocol):
    """The scheduler, as the reconciler sees it."""

    def place(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        count: int,
    ) -> PlaceResult: ...

    def rank(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        candidates: Sequence[Replica],
    ) -> list[Replica]:
        """``candidates`` best first (the ones to keep when there are too many)."""
        ...


@dataclass(frozen=True)
class CreateReplica:
    replica: Replica


@dataclass(frozen=True)
class UpdateReplica:
    """Replace a replica's fields (desired state, observed lost, spec version)."""

    replica: Replica
    reason: str


@dataclass(frozen=True)
class DeleteReplica:
    replica_id: str
    workload: str
    reason: str


@dataclass(frozen=True)
class SetUnplaced:
    workload: str
    count: int
    reason: str


@dataclass(frozen=True)
class DeleteWorkload:
    workload: str


@dataclass(frozen=True)
class SetRollout:
    """Record the roll-out's progress (complete, failed, last batch time) on the workload."""

    workload: str
    rollout: Rollout


@dataclass(frozen=True)
class RollBack:
    """The roll-out of ``from_version`` failed: make ``spec`` (the previous one) a new version."""

    workload: str
    from_version: int
    spec: WorkloadSpec
    reason: str


@dataclass(frozen=True)
class SetNodeState:
    node_id: str
    state: NodeState
    reason: str


Action = (
    CreateReplica
    | UpdateReplica
    | DeleteReplica
    | SetUnplaced
    | DeleteWorkload
    | SetNodeState
    | SetRollout
    | RollBack
    | SetDeparture
)

_HEALTHY = frozenset({NodeState.READY, NodeState.CORDONED, NodeState.DRAINING})
_GONE = frozenset({NodeState.FAILED, NodeState.REMOVED, NodeState.DEPARTED})


@dataclass
class _Work:
    actions: list[Action] = field(default_factory=list)
    # replicas as they will be after this round (so placements see each other)
    replicas: dict[str, Replica] = field(default_factory=dict)


def reconcile(view: ClusterView, placer: Placer, ids: IdSource, now: float) -> list[Action]:
    work = _Work(replicas=dict(view.replicas))
    specs = {name: rec.spec for name, rec in view.workloads.items() if not rec.deleted}
    by_workload: dict[str, list[Replica]] = {}
    for r in view.replicas.values():
        by_workload.setdefault(r.workload, []).append(r)
    nodes = list(view.nodes.values())

    stateful = frozenset(n for n, rec in view.workloads.items() if rec.spec.volumes)
    departures = decide_departures(view.nodes, view.replicas.values(), now, keep=stateful)
    work.actions.extend(departures.nodes)
    for stop in departures.stop:
        _update(
            work, replace(stop.replica, desired=DesiredState.STOPPED, updated_at=now), stop.reason
        )

    for r in sorted(work.replicas.values(), key=lambda r: r.id):
        node = view.nodes.get(r.node_id)
        state = node.state if node else NodeState.REMOVED
        if r.workload not in view.workloads:
            _delete(work, r, "its workload no longer exists")
        elif (
            state in _GONE
            and (r.observed is ReplicaState.LOST or state is NodeState.REMOVED)
            and not _waits_for_its_node(view, r, state)
        ):
            _delete(work, r, f"node {r.node_id or '?'} is {state.value}")
        elif state not in _HEALTHY and r.observed is not ReplicaState.LOST and not r.node_id == "":
            _update(
                work,
                replace(r, observed=ReplicaState.LOST, updated_at=now),
                f"node {r.node_id} is {state.value}",
            )
        elif r.desired is DesiredState.STOPPED and (
            r.observed.terminal or r.observed in (ReplicaState.PENDING, ReplicaState.LOST)
        ):
            _delete(work, r, "stopped")

    for name in sorted(view.workloads):
        rec = view.workloads[name]
        current = [work.replicas[r.id] for r in by_workload.get(name, []) if r.id in work.replicas]
        if rec.deleted:
            for r in current:
                if r.desired is DesiredState.RUNNING:
                    _update(
                        work,
                        replace(r, desired=DesiredState.STOPPED, updated_at=now),
                        "workload deleted",
                    )
            if not current:
                work.actions.append(DeleteWorkload(name))
            continue
        _reconcile_workload(work, view, rec, current, nodes, specs, placer, ids, now)
    _finish_drains(work, view)
    return work.actions


def _waits_for_its_node(view: ClusterView, r: Replica, state: NodeState) -> bool:
    rec = view.workloads.get(r.workload)
    return rec is not None and not rec.deleted and keep_lost(rec.spec, r, state)


def _finish_drains(work: _Work, view: ClusterView) -> None:
    """A draining node whose replicas have all gone becomes cordoned (drain finished)."""
    draining = [n for n in view.nodes.values() if n.state is NodeState.DRAINING]
    if not draining:  # the usual case: no pass over every replica, no sort of every node
        return
    holding = {r.node_id for r in work.replicas.values()}
    for node in sorted(draining, key=lambda n: n.id):
        if node.id not in holding:
            work.actions.append(SetNodeState(node.id, NodeState.CORDONED, "drain finished"))


def _live(r: Replica, nodes: Mapping[str, Node]) -> bool:
    node = nodes.get(r.node_id)
    return (
        r.desired is DesiredState.RUNNING
        and r.observed is not ReplicaState.LOST
        and node is not None
        and node.state in _HEALTHY
    )


def _reconcile_workload(
    work: _Work,
    view: ClusterView,
    rec: WorkloadRecord,
    current: list[Replica],
    nodes: list[Node],
    specs: Mapping[str, WorkloadSpec],
    placer: Placer,
    ids: IdSource,
    now: float,
) -> None:
    spec = rec.spec
    if spec.volumes:
        _reconcile_stateful(work, view, rec, current, nodes, specs, placer, now)
        return
    live = [r for r in current if _live(r, view.nodes)]
    draining = [r for r in live if view.nodes[r.node_id].state is NodeState.DRAINING]
    settled = [r for r in live if view.nodes[r.node_id].state is not NodeState.DRAINING]
    missing = spec.replicas - len(settled)

    created: list[Replica] = []
    if missing > 0:
        # Draining replicas hold their slot until a replacement exists.
        result = placer.place(nodes, list(work.replicas.values()), specs, spec, missing)
        created = _create(work, rec, result.node_ids, ids, now)
        unplaced = missing - len(result.node_ids)
        if (unplaced, result.reason if unplaced else "") != (rec.unplaced, rec.unplaced_reason):
            work.actions.append(SetUnplaced(spec.name, unplaced, result.reason if unplaced else ""))
    elif rec.unplaced:
        work.actions.append(SetUnplaced(spec.name, 0, ""))

    ready_settled = [r for r in settled if r.observed is ReplicaState.RUNNING and r.ready]
    if draining and len(ready_settled) >= spec.replicas:
        for r in draining:
            _update(work, replace(r, desired=DesiredState.STOPPED, updated_at=now), "node draining")

    # Start-first roll-outs run over the count on purpose; the decider retires the old ones.
    surplus_is_surge = surging(rec) and any(r.spec_version != rec.version for r in settled)
    if len(settled) > spec.replicas and not surplus_is_surge:
        ranked = placer.rank(nodes, list(work.replicas.values()), specs, spec, settled)
        # Running replicas first, each group in the placer's order.
        order = {r.id: i for i, r in enumerate(ranked)}
        keep_order = sorted(
            settled,
            key=lambda r: (r.observed is not ReplicaState.RUNNING, order.get(r.id, 1 << 30)),
        )
        for r in keep_order[spec.replicas :]:
            _update(
                work,
                replace(r, desired=DesiredState.STOPPED, updated_at=now),
                f"workload has {len(settled)} replicas, wants {spec.replicas}",
            )

    plan = _roll_out(work, rec, settled + created, now)
    if plan.surge:
        result = placer.place(nodes, list(work.replicas.values()), specs, spec, plan.surge)
        _create(work, rec, result.node_ids, ids, now)
    for r in plan.retire:
        _update(
            work,
            replace(r, desired=DesiredState.STOPPED, updated_at=now),
            f"replaced by a ready replica of spec version {rec.version}",
        )


def _create(
    work: _Work, rec: WorkloadRecord, node_ids: Sequence[str], ids: IdSource, now: float
) -> list[Replica]:
    out = []
    for node_id in node_ids:
        r = Replica(
            id=ids.new_id(f"{rec.name}-"),
            workload=rec.name,
            node_id=node_id,
            spec_version=rec.version,
            created_at=now,
            updated_at=now,
            trace=rec.trace,
        )
        work.replicas[r.id] = r
        work.actions.append(CreateReplica(r))
        out.append(r)
    return out


def _reconcile_stateful(
    work: _Work,
    view: ClusterView,
    rec: WorkloadRecord,
    current: list[Replica],
    nodes: list[Node],
    specs: Mapping[str, WorkloadSpec],
    placer: Placer,
    now: float,
) -> None:
    spec = rec.spec
    plan = plan_stateful(spec, current, view.nodes, now)
    for r, why in plan.update:
        _update(work, r, why)
    for r, why in plan.delete:
        _delete(work, r, why)
    unplaced, reasons = len(plan.waiting), list(plan.waiting)
    # An ordinal whose record is deleted this round is created the next: one key, one change.
    plan.place = [n for n in plan.place if replica_id(spec.name, n) not in view.replicas]
    if plan.place:
        result = placer.place(nodes, list(work.replicas.values()), specs, spec, len(plan.place))
        for ordinal, node_id in zip(plan.place, result.node_ids, strict=False):
            r = Replica(
                id=replica_id(spec.name, ordinal),
                workload=spec.name,
                node_id=node_id,
                spec_version=rec.version,
                created_at=now,
                updated_at=now,
            )
            work.replicas[r.id] = r
            work.actions.append(CreateReplica(r))
        if len(result.node_ids) < len(plan.place):
            unplaced += len(plan.place) - len(result.node_ids)
            reasons.append(result.reason)
    reason = "; ".join(x for x in reasons if x)
    if (unplaced, reason) != (rec.unplaced, rec.unplaced_reason):
        work.actions.append(SetUnplaced(spec.name, unplaced, reason))
    _roll_out(work, rec, plan.live, now)


def _roll_out(work: _Work, rec: WorkloadRecord, settled: list[Replica], now: float) -> RolloutPlan:
    """Apply the roll-out decider (``rollout.decide_rollout``) to the replicas that stay; the
    plan's surge and retirements are the caller's (stateless workloads only)."""
    kept = [
        work.replicas[r.id] for r in settled if work.replicas[r.id].desired is DesiredState.RUNNING
    ]
    plan = decide_rollout(rec, kept, now)
    for r in plan.roll:
        _update(
            work,
            replace(r, spec_version=rec.version, observed=ReplicaState.PENDING, updated_at=now),
            f"rolling out spec version {rec.version}",
        )
    if plan.status is not None:
        work.actions.append(SetRollout(rec.name, plan.status))
    if plan.rollback is not None:
        b = plan.rollback
        work.actions.append(RollBack(rec.name, b.from_version, b.spec, b.reason))
    return plan


def _update(work: _Work, r: Replica, reason: str) -> None:
    work.replicas[r.id] = r
    work.actions.append(UpdateReplica(r, reason))


def _delete(work: _Work, r: Replica, reason: str) -> None:
    work.replicas.pop(r.id, None)
    work.actions.append(DeleteReplica(r.id, r.workload, reason))
