"""The layout history: live layout versions, staged changes and sync trackers. Pure
transitions over an immutable ``LayoutHistory``; ``layout_store.py`` keeps it in etcd.

Rules (after Garage's layout history and update trackers):

* changes are staged first (``stage``), previewed (``preview``: the plan and what it moves)
  and applied as one new version (``apply``), never computed implicitly;
* while an older version is live (some of its new version's nodes have not finished syncing),
  writes go to every live version's nodes and reads use ``read_version``: the newest version
  every one of whose storage nodes has synced; so read-after-write holds across a transition;
* one transition at a time: ``apply`` refuses while an older version is still live, except
  to remove a node the unfinished version waits for (it died mid-transition): that version
  is then abandoned for the new one;
* the newest version's data is pulled (``sync_may_start``) only once every node of it has
  *seen* it (``seen``: it writes to that version's owners too), so no write lands on the older
  owners alone after the pull began;
* an older version is dropped only once every holder of the newest has synced it *and* every
  node of the newest *reads* from it (``reading``): a node whose view still lags reads from a
  version that every write still reaches (without this, a node that had not yet refreshed its
  view after the prune read the old owners, which writes no longer reached: acknowledged
  objects read as missing). Nodes removed by the newest version are not waited for (a dead
  one would block for good); one still running with an older view is the known gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cloudless.lib.errors import Conflict
from cloudless.objectstore.assign import assign
from cloudless.objectstore.layout import (
    MAX_REPLICATION,
    LayoutError,
    LayoutVersion,
    NodeRole,
    Plan,
    check_role,
)


@dataclass(frozen=True)
class LayoutHistory:
    versions: tuple[LayoutVersion, ...] = ()
    """Live versions, oldest first; the last is the current one. Empty before the first."""
    staged_roles: dict[str, NodeRole | None] = field(default_factory=dict)
    """Pending role changes; ``None`` removes the node."""
    staged_replication: int | None = None
    synced: dict[str, int] = field(default_factory=dict)
    """The highest layout version each node has fully synced (holds all its data for)."""
    seen: dict[str, int] = field(default_factory=dict)
    """The newest version each node has loaded (its writes include that version's owners)."""
    reading: dict[str, int] = field(default_factory=dict)
    """The version each node reads from (its ``read_version``), as it last acknowledged."""
    removed: frozenset[str] = frozenset()
    """Nodes an operator removed (``apply`` of a staged removal): the automatic policy does
    not add them back while they stay registered; an operator staging a role for one lifts
    it. Removals by the automatic policy (``apply(..., operator=False)``) are not recorded,
    so a replaced node that returns is added again."""

    @property
    def current(self) -> LayoutVersion | None:
        return self.versions[-1] if self.versions else None

    def version(self) -> int:
        return self.current.version if self.current else 0

    def write_versions(self) -> tuple[LayoutVersion, ...]:
        """Every live version: a write needs a quorum in each."""
        return self.versions

    def read_version(self) -> LayoutVersion | None:
        """The newest version whose storage nodes have all synced to it (or the oldest live
        one if none has finished)."""
        for v in reversed(self.versions):
            if all(self.synced.get(n, 0) >= v.version for n in _holders(v)):
                return v
        return self.versions[0] if self.versions else None


def _holders(v: LayoutVersion) -> frozenset[str]:
    return v.holders


def waiting_on(history: LayoutHistory) -> dict[str, str]:
    """The nodes the newest version waits for now, with what each has to do: first every
    node of it must see it, then every holder sync it, then every node read from it; only
    then are older versions dropped (empty with one live version)."""
    if len(history.versions) < 2:
        return {}
    cur = history.versions[-1]
    v = cur.version
    unseen = {n: f"has not seen v{v}" for n in _unseen(history, cur)}
    if unseen:
        return unseen
    holders = sorted(_holders(cur))
    unsynced = {n: f"has not synced v{v}" for n in holders if history.synced.get(n, 0) < v}
    if unsynced:
        return unsynced
    return {
        n: f"does not read from v{v} yet"
        for n in sorted(cur.roles)
        if history.reading.get(n, 0) < v
    }


def sync_may_start(history: LayoutHistory) -> bool:
    """Whether the newest version's data may be pulled: every node of it has seen it, so
    every write from now on reaches its owners too."""
    cur = history.current
    return cur is not None and not _unseen(history, cur)


def _unseen(history: LayoutHistory, v: LayoutVersion) -> list[str]:
    """The nodes of ``v`` that have not acknowledged seeing it, in name order."""
    return [n for n in sorted(v.roles) if history.seen.get(n, 0) < v.version]


def observed(history: LayoutHistory, node: str, seen: int, reading: int) -> bool:
    """Whether ``observe`` would change nothing."""
    return history.seen.get(node, 0) >= seen and history.reading.get(node, 0) >= reading


def observe(history: LayoutHistory, node: str, seen: int, reading: int) -> LayoutHistory:
    """``node`` has loaded version ``seen`` and reads from version ``reading``; drop the
    versions nobody needs any more. Raises ``LayoutError`` for a version that does not
    exist."""
    if seen > history.version() or reading > seen:
        raise LayoutError(
            f"node {node!r}: cannot have seen v{seen} and read from v{reading}, newest is "
            f"{history.version()}"
        )
    if observed(history, node, seen, reading):
        return history
    return _prune(
        replace(
            history,
            seen={**history.seen, node: max(seen, history.seen.get(node, 0))},
            reading={**history.reading, node: max(reading, history.reading.get(node, 0))},
        )
    )


def stage(history: LayoutHistory, node: str, role: NodeRole | None) -> LayoutHistory:
    """Stage ``node``'s new role (``None``: remove it). Raises ``LayoutError`` on a bad role."""
    if role is not None:
        problems = check_role(node, role)
        if problems:
            raise LayoutError(problems)
    elif history.current is None or node not in history.current.roles:
        if node not in history.staged_roles:
            raise LayoutError(f"node {node!r}: not in the layout, nothing to remove")
    return replace(history, staged_roles={**history.staged_roles, node: role})


def stage_replication(history: LayoutHistory, replication: int) -> LayoutHistory:
    if not 1 <= replication <= MAX_REPLICATION:
        raise LayoutError(f"replication {replication}: must be 1..{MAX_REPLICATION}")
    return replace(history, staged_replication=replication)


def staged_roles(history: LayoutHistory) -> dict[str, NodeRole]:
    roles = dict(history.current.roles) if history.current else {}
    for node, role in history.staged_roles.items():
        if role is None:
            roles.pop(node, None)
        else:
            roles[node] = role
    return roles


def preview(history: LayoutHistory) -> Plan:
    """The plan ``apply`` would commit now. Raises ``LayoutError`` if there is nothing to do
    or the staged layout is impossible."""
    if not history.staged_roles and history.staged_replication is None:
        raise LayoutError("nothing staged: stage a node role or a replication factor first")
    cur = history.current
    replication = history.staged_replication or (cur.replication if cur else 0)
    if replication == 0:
        raise LayoutError("no replication factor: stage one with the first layout")
    previous = cur.partitions if cur else None
    return assign(staged_roles(history), replication, previous)


def apply(
    history: LayoutHistory, expect_version: int, *, operator: bool = True
) -> tuple[LayoutHistory, Plan]:
    """Commit the staged changes as version ``expect_version + 1``; ``operator`` (an
    operator's apply, not the automatic policy's) records staged removals in ``removed``.

    Raises ``Conflict`` if the current version is not ``expect_version`` (someone applied
    first: preview again) or an older version is still syncing (one transition at a time),
    unless the change removes a node that has not synced it: a node that died mid-transition
    must not block the layout for good. The unfinished version is then abandoned: the versions
    before it hold every acknowledged write (a write needs a quorum in each live version) and
    reads keep using them until the new version has synced.
    """
    if history.version() != expect_version:
        raise Conflict(
            f"layout is at version {history.version()}, not {expect_version}: someone applied "
            "a change first; preview again"
        )
    base = history.versions
    if len(history.versions) > 1:
        cur = history.versions[-1]
        waiting = waiting_on(history)
        removing = {n for n, r in history.staged_roles.items() if r is None}
        if not removing & set(waiting):
            raise Conflict(
                f"layout version {cur.version} is still syncing on {', '.join(waiting)} "
                f"({'; '.join(f'{n} {why}' for n, why in waiting.items())}): one transition "
                "at a time; apply again once they have caught up (or remove one of them if it "
                "is gone for good)"
            )
        base = history.versions[:-1]
    plan = preview(history)
    new = LayoutVersion(
        version=history.version() + 1,
        replication=plan.replication,
        roles=staged_roles(history),
        partitions=plan.partitions,
    )
    synced = dict(history.synced)
    seen, reading = dict(history.seen), dict(history.reading)
    if history.current is None:
        # A first layout has no data to sync, and no older version to write to or read.
        synced.update({n: new.version for n in _holders(new)})
        seen.update({n: new.version for n in new.roles})
        reading.update({n: new.version for n in new.roles})
    removed = set(history.removed)
    for node, role in history.staged_roles.items():
        if role is not None:
            removed.discard(node)
        elif operator:
            removed.add(node)
    nxt = LayoutHistory(
        versions=(*base, new),
        staged_roles={},
        staged_replication=None,
        synced=synced,
        seen=seen,
        reading=reading,
        removed=frozenset(removed),
    )
    return _prune(nxt), plan


def ack_synced(history: LayoutHistory, node: str, version: int) -> LayoutHistory:
    """``node`` holds everything layout ``version`` assigns it; drop versions nobody needs."""
    if version > history.version():
        raise LayoutError(
            f"node {node!r}: cannot have synced version {version}, newest is {history.version()}"
        )
    if history.synced.get(node, 0) >= version:
        return history
    return _prune(replace(history, synced={**history.synced, node: version}))


def _prune(history: LayoutHistory) -> LayoutHistory:
    """Keep only the newest version once it waits for nobody (``waiting_on``)."""
    if len(history.versions) > 1 and not waiting_on(history):
        return replace(history, versions=history.versions[-1:])
    return history
