"""Planned departures and owner-reserved hours, decided in pure code.

``decide_departures(nodes, replicas, now)`` runs inside every reconcile round (the leader's
reconcile loop watches the store and applies what it returns). Writes of a departure that
start it (an agent's ``Leave``, ``POST /v1/nodes/{id}/drain`` with a deadline) set the node
draining in the same write. Rules, per node:

* owner-reserved hours: a ready node whose reserved stretch starts within ``lead_s`` (or has
  started) gets a ``reserved`` departure whose deadline is the stretch's start, and is set
  draining; when the stretch is over (and the next is more than ``lead_s`` away) the
  departure is cleared and the node, drained or draining, is made ready again;
* while a node with a departure drains, the reconciler starts each replacement first and
  stops the node's replicas once enough replicas are ready elsewhere (make-before-break);
* past the deadline, replicas still meant to run on the node are stopped regardless (the
  deadline bounds the wait: a replacement that cannot be placed or never gets ready), except
  those of workloads with volumes (``keep``): their data is on the node, they stay until it
  goes and ``on_node_loss`` decides then;
* a leaving node (``leave``) whose agent has gone (offline) is ``departed``: not failed, so
  no reliability penalty; its replicas are lost and deleted, replacements go elsewhere;
* a ``leave`` or ``drain`` departure on a node that is ready again (a user uncordoned it,
  a departed node came back) is cleared; a ``drain`` departure is cleared once the drain
  finished (the node is cordoned).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cloudless.model.departure import (
    Departure,
    DepartureKind,
    next_reserved,
    reserved_at,
)
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica

# Reserved hours are announced this long before they start, so the node is empty by then.
RESERVED_LEAD_S = 600.0


@dataclass(frozen=True)
class SetDeparture:
    """Write ``departure`` (``None``: clear it) on a node and, unless ``state`` is ``None``,
    move it to ``state`` (``Node.moved_to``), in one write."""

    node_id: str
    departure: Departure | None
    state: NodeState | None
    reason: str


@dataclass(frozen=True)
class StopReplica:
    replica: Replica
    reason: str


@dataclass(frozen=True)
class DepartureDecision:
    nodes: list[SetDeparture]
    stop: list[StopReplica]


def decide_departures(
    nodes: Mapping[str, Node],
    replicas: Iterable[Replica],
    now: float,
    lead_s: float = RESERVED_LEAD_S,
    keep: frozenset[str] = frozenset(),
) -> DepartureDecision:
    """``keep``: workloads whose replicas the deadline does not stop (with volumes)."""
    writes: list[SetDeparture] = []
    stop: list[StopReplica] = []
    watched = [n for n in nodes.values() if n.departure is not None or n.reserved_hours]
    if not watched:  # the usual case: no pass over the replicas
        return DepartureDecision(writes, stop)
    on_node: dict[str, list[Replica]] = {}
    for r in replicas:
        on_node.setdefault(r.node_id, []).append(r)
    for node in sorted(watched, key=lambda n: n.id):
        w = _node(node, now, lead_s)
        if w is not None:
            writes.append(w)
            continue
        d = node.departure
        if d is not None and now >= d.deadline and node.state is NodeState.DRAINING:
            for r in sorted(on_node.get(node.id, []), key=lambda r: r.id):
                if r.desired is DesiredState.RUNNING and r.workload not in keep:
                    stop.append(StopReplica(r, f"node {node.id}: {_late(d)}"))
    return DepartureDecision(writes, stop)


def _late(d: Departure) -> str:
    return f"departure deadline passed ({d.kind.value}: {d.reason or 'no reason given'})"


def _node(node: Node, now: float, lead_s: float) -> SetDeparture | None:
    d = node.departure
    if d is None:
        if node.state is not NodeState.READY:
            return None
        start = now if reserved_at(node.reserved_hours, now) else None
        if start is None:
            start = next_reserved(node.reserved_hours, now, lead_s)
        if start is None:
            return None
        dep = Departure(DepartureKind.RESERVED, "owner-reserved hours", now, start)
        return SetDeparture(node.id, dep, NodeState.DRAINING, "owner-reserved hours begin")
    if d.kind is DepartureKind.RESERVED:
        upcoming = reserved_at(node.reserved_hours, now) or (
            next_reserved(node.reserved_hours, now, lead_s) is not None
        )
        if upcoming:
            return None
        back = NodeState.READY if node.state in (NodeState.CORDONED, NodeState.DRAINING) else None
        return SetDeparture(node.id, None, back, "owner-reserved hours over")
    if node.state is NodeState.READY:
        return SetDeparture(node.id, None, None, f"{d.kind.value} cancelled: node is ready")
    if d.kind is DepartureKind.LEAVE and node.state is NodeState.OFFLINE:
        return SetDeparture(node.id, d, NodeState.DEPARTED, f"left as announced ({d.reason})")
    if d.kind is DepartureKind.DRAIN and node.state is NodeState.CORDONED:
        return SetDeparture(node.id, None, None, "drain finished")
    return None
