"""User commands, decided in pure code: apply, scale, delete a workload; cordon, uncordon,
drain, remove a node.

Each command takes the stored record it acts on (``None``: there is none), the request and
``now``, and returns a ``Decision``: the record to write (``None``: leave the store alone),
the event message that tells of it, or a ``Refusal`` with its reason. No ``await``, no clock,
no store. The caller runs a command inside ``Table.update`` (compare-and-swap, retried on
contention), so a command may run more than once, on fresher records each time; the last
decision is the one that counts. Both the user API and the simulator drive these functions,
so they cannot drift apart.

Rules:
* apply creates the workload or configures it; applying an unchanged spec writes nothing
  (and still answers "configured"); the version moves only when something other than the
  replica count changed (``WorkloadRecord.with_spec``).
* scale sets the replica count; a workload that is being deleted is refused (409).
* delete marks the workload deleted (the reconciler stops its replicas, then removes it);
  deleting again writes nothing unless it now also asks for the volumes.
* cordon, uncordon and drain move a node as ``cloudless.model.node.transition`` allows;
  a move it refuses is refused with its reason (409); a node already there is no write. A
  drain may carry a deadline (a ``drain`` departure); any other user move clears a
  ``drain`` departure set before.
* remove marks the node removed (its certificate is revoked by the caller).
* a record that is not there is refused as not found (404).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, Literal, TypeVar

from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.errors import CloudlessError, Conflict, NotFound
from cloudless.model.departure import Departure, DepartureKind
from cloudless.model.node import Node, NodeState
from cloudless.model.workload import WorkloadSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Refusal:
    """Why a command cannot be done: ``not_found`` (404) or ``conflict`` (409)."""

    code: Literal["not_found", "conflict"]
    reason: str

    def error(self) -> CloudlessError:
        return NotFound(self.reason) if self.code == "not_found" else Conflict(self.reason)


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a command does to one record."""

    write: T | None = None  # the new record; None: nothing to write
    event: str = ""  # the event that tells of the command ("" when refused)
    refused: Refusal | None = None
    created: bool = False  # apply: there was no record before

    def check(self) -> None:
        """Raise the refusal as the typed error the API answers with."""
        if self.refused is not None:
            raise self.refused.error()


def workload_not_found(name: str) -> Refusal:
    return Refusal(
        "not_found", f"workload {name!r} not found: list them with `cloudless get workloads`"
    )


def node_not_found(node_id: str) -> Refusal:
    return Refusal(
        "not_found", f"node {node_id!r} not found: list nodes with `cloudless get nodes`"
    )


# ---- workloads -----------------------------------------------------------------------------


def apply(
    cur: WorkloadRecord | None, spec: WorkloadSpec, now: float, trace: str = ""
) -> Decision[WorkloadRecord]:
    """Create or configure ``spec.name``; ``trace``: the apply's traceparent ("" untraced)."""
    if cur is None:
        new = WorkloadRecord(spec=spec, created_at=now, updated_at=now, trace=trace)
        return Decision(new, f"workload {spec.name} created (version {new.version})", created=True)
    changed = cur.with_spec(spec, now)
    write = None if changed is cur else replace(changed, trace=trace)
    version = (write or cur).version
    return Decision(write, f"workload {spec.name} configured (version {version})")


def scale(
    cur: WorkloadRecord | None, name: str, replicas: int, now: float
) -> Decision[WorkloadRecord]:
    if cur is None:
        return Decision(refused=workload_not_found(name))
    if cur.deleted:
        return Decision(
            refused=Refusal("conflict", f"workload {name} is being deleted; it cannot be scaled")
        )
    event = f"workload {name} scaled to {replicas}"
    if cur.spec.replicas == replicas:
        return Decision(None, event)
    return Decision(replace(cur, spec=replace(cur.spec, replicas=replicas), updated_at=now), event)


def delete(cur: WorkloadRecord | None, name: str, *, volumes: bool) -> Decision[WorkloadRecord]:
    """Mark ``name`` deleted; ``volumes``: its persistent volumes go too."""
    if cur is None:
        return Decision(refused=workload_not_found(name))
    event = f"workload {name}{' and its volumes' if volumes else ''} deleting"
    if cur.deleted and cur.delete_volumes >= volumes:
        return Decision(None, event)
    return Decision(replace(cur, deleted=True, delete_volumes=cur.delete_volumes or volumes), event)


# ---- nodes ---------------------------------------------------------------------------------


def set_node_state(
    cur: Node | None,
    node_id: str,
    target: NodeState,
    verb: str,
    departure: Departure | None = None,
) -> Decision[Node]:
    """Move ``node_id`` to ``target`` as ``transition`` allows (``verb`` names the command);
    ``departure``: the drain's deadline, if any."""
    if cur is None:
        return Decision(refused=node_not_found(node_id))
    new, why = cur.moved_to(target)
    if why:
        return Decision(refused=Refusal("conflict", f"cannot {verb} node {node_id}: {why}"))
    dep = cur.departure
    if departure is not None:
        dep = departure
    elif dep is not None and dep.kind is DepartureKind.DRAIN:
        dep = None
    if dep != cur.departure:
        new = replace(new or cur, departure=dep)
    return Decision(new, f"node {node_id} {verb}ed")


def cordon(cur: Node | None, node_id: str) -> Decision[Node]:
    return set_node_state(cur, node_id, NodeState.CORDONED, "cordon")


def uncordon(cur: Node | None, node_id: str) -> Decision[Node]:
    return set_node_state(cur, node_id, NodeState.READY, "uncordon")


def drain(cur: Node | None, node_id: str, departure: Departure | None = None) -> Decision[Node]:
    return set_node_state(cur, node_id, NodeState.DRAINING, "drain", departure)


def remove(cur: Node | None, node_id: str) -> Decision[Node]:
    if cur is None:
        return Decision(refused=node_not_found(node_id))
    return Decision(
        replace(cur, state=NodeState.REMOVED), f"node {node_id} removed; its certificate is revoked"
    )
