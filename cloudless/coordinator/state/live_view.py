"""The reconciler's incremental picture of nodes, workloads and replicas, fed by one watch.

``LiveView`` lists the three tables once at one revision, then follows a single watch on
the cluster's key root from the revision after it, decoding each change once. ``snapshot()``
builds the same ``Snapshot`` that ``ClusterState.snapshot()`` reads from the store, without
touching the store. Contracts:

* **Consistent at a known revision.** ``revision`` is the newest store revision the view
  reflects in full: the watch delivers every change under the root in revision order, so
  after applying a change at revision R the view equals a listing at R (of these tables).
  ``revision`` only grows; ``snapshot().revision`` is it.
* **Read-your-writes on request.** Writes under the root end up in the view;
  ``caught_up(R, within)`` waits until ``revision >= R``. A caller that wrote (or lost a
  compare-and-swap race) reads the store's revision and waits for it before deciding again.
* **Usage refreshes are applied, not filtered.** A node's usage and heartbeat time change
  every few seconds and the scheduler scores on usage, so every node write is decoded and
  stored (it costs what the old wake filter already spent decoding it). They do not call
  ``on_change``: only what ``placement_fingerprint`` covers, or any workload or replica
  change, does.
* **Never wrong for long.** A compacted resume point, a caller's ``reload()`` (e.g. when
  catching up timed out) or the periodic ``resync_s`` re-lists; changes that arrive while a
  listing is in flight are kept and re-applied on top of it. Other watch errors resume from
  ``revision + 1`` after a backoff (nothing is missed: the store replays from there or says
  ``Compacted``). Undecodable records are left out and reported in ``problems``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from cloudless.coordinator.state.cluster import ClusterState, Snapshot
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock
from cloudless.lib.first import first_of
from cloudless.model.node import Node
from cloudless.model.replica import Replica
from cloudless.store.errors import Compacted, DecodeError, StoreError
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.types import Event, EventType, KeyValue

log = logging.getLogger("cloudless.coordinator.state.live_view")

T = TypeVar("T")
WATCH_BACKOFF = Backoff(base=0.1, cap=2.0)  # between attempts to resume a failed watch


def placement_fingerprint(n: Node) -> tuple[object, ...]:
    """What placement and reconciliation look at in a node besides usage and heartbeat time:
    a node write that leaves this unchanged is a usage refresh and needs no new round."""
    return (
        n.state,
        n.allocatable,
        tuple(sorted(n.labels.items())),
        n.zone,
        n.region,
        n.arch,
        n.device_class,
        n.conditions.memory_pressure,
        n.conditions.disk_pressure,
        round(n.reliability, 2),
        n.departure,
        n.reserved_hours,
    )


class _Contents:
    """The three tables' decoded records (replicas by their id, as ``ClusterView`` keys them)."""

    def __init__(self, state: ClusterState) -> None:
        self.st = state
        self.nodes: dict[str, Node] = {}
        self.workloads: dict[str, WorkloadRecord] = {}
        self.replicas: dict[str, Replica] = {}
        self.replica_ids: dict[str, str] = {}  # record name -> replica id
        self.problems: dict[str, str] = {}  # key -> why it did not decode

    def apply(self, e: Event) -> bool:
        """Apply one change; True if it matters to a round (see module docstring)."""
        st, key = self.st, e.key
        if key.startswith(st.nodes.prefix):
            return self._node(e)
        if key.startswith(st.workloads.prefix):
            name = st.workloads.name_of(key)
            self.workloads.pop(name, None)
            w = self._decode(st.workloads, e)
            if w is not None:
                self.workloads[name] = w
            return True
        if key.startswith(st.replicas.prefix):
            name = st.replicas.name_of(key)
            old = self.replica_ids.pop(name, None)
            if old is not None:
                self.replicas.pop(old, None)
            r = self._decode(st.replicas, e)
            if r is not None:
                self.replicas[r.id] = r
                self.replica_ids[name] = r.id
            return True
        return False  # events, tokens, election...: not part of the view

    def _node(self, e: Event) -> bool:
        name = self.st.nodes.name_of(e.key)
        old = self.nodes.get(name)
        new = self._decode(self.st.nodes, e)
        if new is not None:
            self.nodes[name] = new  # in place: the order of nodes stays put across updates
        else:
            self.nodes.pop(name, None)
        if old is None or new is None:
            return True
        return placement_fingerprint(old) != placement_fingerprint(new)

    def _decode(self, table: Table[T], e: Event) -> T | None:
        self.problems.pop(e.key, None)
        if e.type is EventType.DELETE:
            return None
        try:
            return table.decode(e.kv).value
        except DecodeError as err:
            self.problems[e.key] = str(err)
            return None


class LiveView:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        *,
        on_change: Callable[[], None] = lambda: None,
        resync_s: float = 300.0,
        backoff: Backoff = WATCH_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.state = state
        self.clock = clock
        self.on_change = on_change
        self.resync_s = resync_s
        self.backoff = backoff
        self.rng = rng or random.Random()
        self._c = _Contents(state)
        self._listed_at = 0  # revision of the last listing: older watch events are in it
        self._revision = 0
        self._advanced = asyncio.Event()
        self._pending: list[Event] | None = None  # changes seen while a listing is in flight
        self._lock = asyncio.Lock()
        self.relists = 0

    @property
    def revision(self) -> int:
        """The store revision the view reflects (0 until the first listing)."""
        return self._revision

    @property
    def loaded(self) -> bool:
        return self._revision > 0

    def snapshot(self) -> Snapshot:
        """The view as a ``Snapshot`` (copies: later changes do not leak into a decision)."""
        c = self._c
        view = ClusterView(
            nodes=dict(c.nodes),
            workloads=dict(c.workloads),
            replicas=dict(c.replicas),
        )
        order = (self.state.nodes.prefix, self.state.workloads.prefix, self.state.replicas.prefix)
        keys = sorted(
            c.problems, key=lambda k: (next(i for i, p in enumerate(order) if k.startswith(p)), k)
        )
        # Same order as ``ClusterState.snapshot``: by table (nodes, workloads, replicas), then key.
        return Snapshot(view, self._revision, tuple(c.problems[k] for k in keys))

    # ---- feeding -----------------------------------------------------------------------------

    def apply(self, events: Sequence[Event]) -> None:
        """Apply watch events (in revision order, as the watch delivers them). Events at or
        before the last listing are already in it and skipped."""
        if self._pending is not None:
            self._pending.extend(events)
        fresh = [e for e in events if e.revision > self._listed_at]
        if not fresh:
            return
        changed = False
        for e in fresh:
            changed |= self._c.apply(e)
        self._advance(fresh[-1].revision)
        if changed:
            self.on_change()

    async def reload(self) -> None:
        """Re-list the three tables at one revision and replace the contents; changes that
        the watch delivers meanwhile are applied on top. Raises ``StoreError``."""
        async with self._lock:
            self._pending = []
            try:
                fresh = _Contents(self.state)
                rev = listed = await self._list_into(fresh)
                for e in self._pending:
                    if e.revision > rev:
                        fresh.apply(e)
                        rev = max(rev, e.revision)
            finally:
                self._pending = None
            if self._revision == rev and _differs(self._c, fresh):
                # Same revision, different contents: a bug in applying changes.
                log.error("view re-listed at revision %d: it had drifted from the store", rev)
            self._c = fresh
            self._listed_at = max(self._listed_at, listed)
            self.relists += 1
            self._advance(rev)
            self.on_change()

    async def _list_into(self, c: _Contents) -> int:
        st = self.state
        listing = await st.store.list(st.nodes.prefix)
        rev = listing.revision
        kvs: list[KeyValue] = list(listing.kvs)
        for table in (st.workloads, st.replicas):
            kvs.extend((await st.store.list(table.prefix, revision=rev)).kvs)
        for kv in kvs:
            c.apply(Event(EventType.PUT, kv))
        return rev

    def _advance(self, rev: int) -> None:
        if rev > self._revision:
            self._revision = rev
            self._advanced.set()
            self._advanced = asyncio.Event()

    # ---- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then follow the watch forever (re-listing after compaction, resuming after
        errors, re-listing every ``resync_s``). Cancel to stop."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow())
            tg.create_task(self._resync_timer())

    async def _follow(self) -> None:
        attempt = 0
        relist = True
        while True:
            try:
                if relist:
                    await self.reload()
                    relist = False
                start = self._revision + 1
                async with contextlib.aclosing(
                    self.state.store.watch(ROOT, start_revision=start)
                ) as batches:
                    async for batch in batches:
                        self.apply(batch.events)
                        attempt = 0
                raise StoreError("the store closed the watch")
            except Compacted as e:
                log.info("view watch compacted (%s): re-listing", e)
                relist = True
            except StoreError as e:
                log.warning("view watch failed, resuming after a pause: %s", e)
                await self.clock.sleep(self.backoff.delay(attempt, self.rng))
                attempt += 1

    async def _resync_timer(self) -> None:
        while True:
            await self.clock.sleep(self.resync_s)
            with contextlib.suppress(StoreError):
                await self.reload()

    async def caught_up(self, revision: int, within: float) -> bool:
        """Wait until the view reflects ``revision`` or ``within`` seconds pass; True if it
        does."""
        if self._revision >= revision:
            return True
        deadline = self.clock.monotonic() + within
        while self._revision < revision:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                break
            await first_of(self._advanced.wait(), self.clock.sleep(left))
        return self._revision >= revision


def _differs(a: _Contents, b: _Contents) -> bool:
    pairs: Iterable[tuple[object, object]] = (
        (a.nodes, b.nodes),
        (a.workloads, b.workloads),
        (a.replicas, b.replicas),
    )
    return any(x != y for x, y in pairs)
