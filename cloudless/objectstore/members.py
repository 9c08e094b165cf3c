"""Storage nodes joining, leaving and coming back: the registry and the automatic layout
change (pure decisions; ``service.py`` acts on them).

Every storage or gateway node keeps a registration at ``/cloudless/objectstore-nodes/<name>``
(zone, capacity, its peer and S3 addresses) and bumps its ``beat`` counter every few seconds.
A node is *absent* once an observer has seen its counter stand still for the grace period,
timed on the observer's own monotonic clock (``Presence``): no two devices' clocks are ever
compared.

Rules of ``decide`` (the churn policy):

* nothing while a transition is in flight (one at a time) or while an operator has staged a
  change (theirs to apply); except that a node the transition waits for (it has not synced
  the new version) absent past the grace period is replaced, abandoning that transition;
* no layout yet: the first one once ``replication`` storage nodes have registered;
* a registered, present storage node missing from the layout (new, or replaced earlier and
  now back), or whose zone or capacity changed, is added: one minimal-move change; not a node
  an operator removed (``LayoutHistory.removed``: it stays out, running or not, until an
  operator stages a role for it);
* a layout node absent longer than the grace period (default 15 min at R=3, 5 min at R=2) is
  removed, so its partitions are re-replicated elsewhere (zones respected by ``assign``);
  never below ``replication`` storage nodes, and one node per transition;
* a node absent for less than the grace period changes nothing.

Exactly one node acts: the present storage node with the smallest name (``actor``); the
layout's compare-and-swap makes a race between two actors harmless anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudless.objectstore.history import LayoutHistory, waiting_on
from cloudless.objectstore.layout import NodeRole
from cloudless.store.codec import DataclassCodec
from cloudless.store.tables import TableSpec

GRACE_R3_S = 15 * 60.0
GRACE_R2_S = 5 * 60.0


def default_grace(replication: int) -> float:
    return GRACE_R2_S if replication <= 2 else GRACE_R3_S


@dataclass(frozen=True)
class StorageNode:
    """A node's registration. ``capacity`` in bytes, 0 for a gateway. ``s3_gateway``:
    ``"<ip>:<port>"`` where the device's containers and the overlay reach this node's S3 API
    (its container bridge address), set while the S3 API serves on every address of a device
    whose container network is up, else empty; the cluster's S3 service routes to it
    (``network/s3_service.py``). ``disk_free``/``disk_size``: bytes of the file system
    under the node's data directory at its last beat (-1: not reported); ``refusing_writes``:
    a write failed there for want of room in the last ``local.FULL_HOLD_S``."""

    name: str
    zone: str
    capacity: int
    rpc_url: str
    s3_url: str
    beat: int = 0
    s3_gateway: str = ""
    disk_free: int = -1
    disk_size: int = -1
    refusing_writes: bool = False

    @property
    def role(self) -> NodeRole:
        return NodeRole(self.zone, self.capacity)


VOLATILE = ("beat", "disk_free", "disk_size", "refusing_writes")
"""Registration fields that change from beat to beat while the node's addresses and role
stay: a reader that routes by registrations ignores them when it asks "did anything
change?" (``network.controller``)."""

NODES = TableSpec(
    "objectstore-nodes",
    DataclassCodec(StorageNode, kind="objectstore_node", ignore_unknown=True),
)
"""Registrations, rewritten by their node every beat: fields a newer node adds are ignored by
an older reader (a rolling upgrade), which reads the fields it knows."""


@dataclass
class Presence:
    """What one observer has seen of every registration: the last ``beat`` and when (its own
    monotonic clock) it last changed."""

    seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def observe(self, nodes: dict[str, StorageNode], now: float) -> None:
        for name, n in nodes.items():
            last = self.seen.get(name)
            if last is None or last[0] != n.beat:
                self.seen[name] = (n.beat, now)
        for name in set(self.seen) - set(nodes):
            del self.seen[name]

    def silent_for(self, name: str, now: float) -> float:
        """Seconds since ``name``'s beat last moved (infinite if never registered)."""
        last = self.seen.get(name)
        return float("inf") if last is None else now - last[1]


@dataclass(frozen=True)
class Change:
    """A layout change to stage and apply at once."""

    roles: dict[str, NodeRole | None]
    replication: int | None
    reason: str


@dataclass(frozen=True)
class Decision:
    change: Change | None
    why: str
    """Why there is no change (or the change's reason): for logs and ``storage status``."""


def actor(nodes: dict[str, StorageNode], absent: set[str]) -> str | None:
    live = sorted(n for n, r in nodes.items() if r.capacity > 0 and n not in absent)
    return live[0] if live else None


def absent_nodes(presence: Presence, names: set[str], now: float, grace: float) -> set[str]:
    return {n for n in names if presence.silent_for(n, now) >= grace}


def decide(
    history: LayoutHistory,
    nodes: dict[str, StorageNode],
    absent: set[str],
    replication: int,
) -> Decision:
    """The next automatic layout change, if any (see the module rules)."""
    staged = bool(history.staged_roles) or history.staged_replication is not None
    if len(history.versions) > 1:
        return _mid_transition(history, absent, staged)
    if staged:
        return Decision(None, "an operator staged a change: apply or revert it")
    present = {n: r for n, r in nodes.items() if r.capacity > 0 and n not in absent}
    cur = history.current
    if cur is None:
        if len(present) < replication:
            return Decision(
                None,
                f"waiting for {replication} storage nodes before the first layout "
                f"({len(present)} registered)",
            )
        roles: dict[str, NodeRole | None] = {n: r.role for n, r in sorted(present.items())}
        return Decision(Change(roles, replication, "first layout"), "first layout")
    changed = {
        n: r.role
        for n, r in sorted(present.items())
        if cur.roles.get(n) != r.role and n not in history.removed
    }
    if changed:
        names = ", ".join(changed)
        return Decision(Change(dict(changed), None, f"add {names}"), f"add {names}")
    storing = sorted(n for n, r in cur.roles.items() if r.stores)
    gone = [n for n in storing if n in absent]
    if gone:
        if len(storing) - 1 < cur.replication:
            return Decision(
                None,
                f"{', '.join(gone)} absent past the grace period, but removing it would leave "
                f"fewer than {cur.replication} storage nodes",
            )
        return Decision(Change({gone[0]: None}, None, f"replace {gone[0]}"), f"replace {gone[0]}")
    return Decision(None, "layout matches the registered nodes")


def _mid_transition(history: LayoutHistory, absent: set[str], staged: bool) -> Decision:
    """While a transition syncs: nothing, unless a node it waits for is absent past the grace
    period (it would wait for good): that node is replaced (``history.apply`` abandons the
    unfinished version for the new one)."""
    cur = history.current
    assert cur is not None
    why = f"layout v{cur.version} is still syncing"
    holders = cur.holders
    stuck = sorted(n for n in waiting_on(history) if n in absent)
    if not stuck or staged:
        return Decision(None, why)
    if stuck[0] in holders and len(holders) - 1 < cur.replication:
        return Decision(
            None,
            f"{why}; {stuck[0]} is absent past the grace period, but removing it would leave "
            f"fewer than {cur.replication} storage nodes",
        )
    reason = f"replace {stuck[0]}, which v{cur.version} waits for"
    return Decision(Change({stuck[0]: None}, None, reason), reason)
