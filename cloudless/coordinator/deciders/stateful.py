"""Reconciling workloads with volumes: stable identities, placed back where their data is.

Pure, like ``reconcile`` (which calls it for every workload that declares volumes). Rules:

* replica ids are ``<workload>-<ordinal>`` for ordinals ``0 .. replicas-1``; a missing ordinal
  is created, always with the lowest free ones first, and placed by the scheduler;
* a replica's record is its volumes' address: while it exists the replica stays on its node
  (restarts, image updates and agent restarts happen there, and the data with them);
* when that node is offline, failed or departed, ``on_node_loss`` decides: ``wait``
  (default) keeps the record (lost) and reports the ordinal unplaced, naming the node it
  waits for; ``recreate`` deletes the record, and the next round creates the ordinal empty
  on another node. A node
  that was *removed* never comes back: its replicas are recreated whatever the choice;
* ordinals at or above ``replicas`` (scale down) are stopped, highest first, all at once; their
  volumes stay on their nodes;
* a replica being stopped whose ordinal is wanted again is asked to run again;
* a changed spec rolls out in place, as for any workload (``reconcile._roll_out``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.volumes import NodeLoss
from cloudless.model.workload import WorkloadSpec

#: Node states in which a stateful replica is where it should be.
HOLDING = frozenset({NodeState.READY, NodeState.CORDONED, NodeState.DRAINING})


def replica_id(workload: str, ordinal: int) -> str:
    return f"{workload}-{ordinal}"


def ordinal_of(workload: str, rid: str) -> int | None:
    """The ordinal in ``rid`` if it is ``<workload>-<n>`` with a canonical ``n``, else None."""
    prefix = f"{workload}-"
    tail = rid[len(prefix) :] if rid.startswith(prefix) else ""
    if tail.isdigit() and str(int(tail)) == tail:
        return int(tail)
    return None


@dataclass
class StatefulPlan:
    """What the workload needs this round: ordinals to place, replicas to delete (node lost
    under ``recreate``), updates (stop / run again), and why some ordinals wait."""

    place: list[int] = field(default_factory=list)
    delete: list[tuple[Replica, str]] = field(default_factory=list)
    update: list[tuple[Replica, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    live: list[Replica] = field(default_factory=list)


def plan_stateful(
    spec: WorkloadSpec, current: Sequence[Replica], nodes: Mapping[str, Node], now: float
) -> StatefulPlan:
    plan = StatefulPlan()
    by_ordinal: dict[int, Replica] = {}
    for r in sorted(current, key=lambda r: r.id):
        n = ordinal_of(spec.name, r.id)
        if n is None or n >= spec.replicas:
            if r.desired is DesiredState.RUNNING:
                why = f"workload has {spec.replicas} replicas; {r.id} is beyond them"
                plan.update.append((replace(r, desired=DesiredState.STOPPED, updated_at=now), why))
            continue
        by_ordinal[n] = r
    for n in range(spec.replicas):
        found = by_ordinal.get(n)
        if found is None:
            plan.place.append(n)
            continue
        r = found
        if r.desired is DesiredState.STOPPED:
            plan.update.append(
                (replace(r, desired=DesiredState.RUNNING, updated_at=now), "wanted again")
            )
            r = replace(r, desired=DesiredState.RUNNING)
        node = nodes.get(r.node_id)
        state = node.state if node is not None else NodeState.REMOVED
        if state in HOLDING and r.observed is not ReplicaState.LOST:
            plan.live.append(r)
        elif state is NodeState.REMOVED or spec.on_node_loss is NodeLoss.RECREATE:
            why = f"node {r.node_id or '?'} holding its volumes is {state.value}"
            plan.delete.append((r, f"{why}; recreating it empty on another node"))
        else:
            plan.waiting.append(
                f"{r.id} waits for node {r.node_id} holding its volumes ({state.value}; "
                "on_node_loss: wait)"
            )
    return plan


def keep_lost(spec: WorkloadSpec, r: Replica, node_state: NodeState) -> bool:
    """Whether the generic rule "a lost replica on a failed node is deleted" must spare ``r``:
    under ``wait`` its record is what brings it back to its data when the node returns."""
    return (
        bool(spec.volumes)
        and spec.on_node_loss is NodeLoss.WAIT
        and node_state in (NodeState.FAILED, NodeState.DEPARTED)
        and ordinal_of(spec.name, r.id) is not None
    )
