"""``MemoryStore``: an in-process ``Store`` with etcd's semantics, for tests and simulation.

Models a global revision, create/mod revisions and versions, MVCC reads at a past revision,
leases that expire on an injected ``Clock`` (checked on every call and by ``run()``), watches
from a revision, and compaction (``Compacted``). Single event loop; no real I/O.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field, replace

from cloudless.lib.clock import Clock, SystemClock
from cloudless.store.errors import Compacted, LeaseNotFound, StoreError
from cloudless.store.types import (
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    Get,
    GetResult,
    KeyListing,
    KeyValue,
    Lease,
    Listing,
    OpResult,
    Put,
    PutResult,
    TxnOp,
    TxnResult,
    WatchBatch,
    check_ops,
)


@dataclass
class _Lease:
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


@dataclass
class _Watcher:
    prefix: str
    prev_kv: bool
    queue: asyncio.Queue[WatchBatch | StoreError | None]
    min_revision: int = 0  # etcd delivers nothing older, even when asked for a future one


class MemoryStore:
    """See module docstring. ``run()`` expires leases in the background (optional: every
    call also expires due leases first)."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        first_lease_id: int = 0x7E57_0000,
        retain_revisions: int | None = None,
    ) -> None:
        """``retain_revisions``: auto-compact like etcd's revision mode (keep at least that
        many revisions of history), so long simulations do not grow without bound."""
        self._clock = clock or SystemClock()
        self._retain = retain_revisions
        self._rev = 1  # etcd starts at revision 1 with an empty keyspace
        self._compacted = 0
        self._current: dict[str, KeyValue] = {}
        # Per key: (revision, kv-or-None-for-tombstone), ascending.
        self._history: dict[str, list[tuple[int, KeyValue | None]]] = {}
        self._events: list[Event] = []  # every event after the compaction point, in order
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(first_lease_id)
        self._watchers: list[_Watcher] = []
        self._closed = False

    # ---- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._tick()
        return self._current.get(key)

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        self._tick()
        if revision > self._rev:
            raise StoreError(f"revision {revision} is in the future (store is at {self._rev})")
        at = revision if revision else self._rev
        return Listing(self._range(prefix, revision), at)

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        self._tick()
        if limit < 1:
            raise StoreError(f"keys: limit must be at least 1, got {limit}")
        found = [k for k in self._current if k.startswith(prefix)]
        return KeyListing(tuple(heapq.nsmallest(limit, found)), len(found), self._rev)

    async def revision(self) -> int:
        self._tick()
        return self._rev

    def size_bytes(self) -> int:
        """Bytes of keys and values held: every version kept since the compaction point
        (the current keyspace among them) and the watch backlog; what etcd's database size
        grows with."""
        held = 0
        for key, hist in self._history.items():
            held += sum(len(key) + (len(kv.value) if kv else 0) for _, kv in hist)
        return held + sum(len(e.key) + len(e.kv.value) for e in self._events)

    def _range(self, prefix: str, revision: int) -> tuple[KeyValue, ...]:
        if revision == 0 or revision >= self._rev:
            return tuple(self._current[k] for k in sorted(self._current) if k.startswith(prefix))
        if revision < self._compacted:
            raise Compacted(revision, self._compacted)
        out = []
        for k in sorted(self._history):
            if not k.startswith(prefix):
                continue
            hist = self._history[k]
            i = bisect.bisect_right(hist, revision, key=lambda h: h[0])
            if i and (kv := hist[i - 1][1]) is not None:
                out.append(kv)
        return tuple(out)

    # ---- writes ----------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        result = await self.txn((), (Put(key, value, lease),))
        return result.revision

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        result = await self.txn((), (Delete(key, prefix),))
        first = result.results[0]
        assert isinstance(first, DeleteResult)
        return first.deleted

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        self._tick()
        check_ops(success)
        check_ops(failure)
        ok = all(c.holds(self._current.get(c.key)) for c in compares)
        ops = success if ok else failure
        for op in ops:
            if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                raise LeaseNotFound(op.lease)
        rev = self._rev + 1
        events: list[Event] = []
        results: list[OpResult] = []
        for op in ops:
            if isinstance(op, Get):
                results.append(GetResult(self._match(op.key, op.prefix)))
            elif isinstance(op, Put):
                prev = self._current.get(op.key)
                results.append(PutResult(prev))
                events.append(self._apply_put(op, prev, rev))
            else:
                doomed = self._match(op.key, op.prefix)
                results.append(DeleteResult(len(doomed)))
                events.extend(self._apply_delete(kv, rev) for kv in doomed)
        if events:
            self._commit(rev, events)
        return TxnResult(ok, self._rev, tuple(results))

    def _match(self, key: str, prefix: bool) -> tuple[KeyValue, ...]:
        if prefix:
            return tuple(self._current[k] for k in sorted(self._current) if k.startswith(key))
        kv = self._current.get(key)
        return (kv,) if kv else ()

    def _apply_put(self, op: Put, prev: KeyValue | None, rev: int) -> Event:
        if prev is not None and prev.lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(op.key)
        kv = KeyValue(
            op.key,
            op.value,
            create_revision=prev.create_revision if prev else rev,
            mod_revision=rev,
            version=prev.version + 1 if prev else 1,
            lease=op.lease,
        )
        if op.lease:
            self._leases[op.lease].keys.add(op.key)
        self._current[op.key] = kv
        self._history.setdefault(op.key, []).append((rev, kv))
        return Event(EventType.PUT, kv, prev)

    def _apply_delete(self, prev: KeyValue, rev: int) -> Event:
        if prev.lease and prev.lease in self._leases:
            self._leases[prev.lease].keys.discard(prev.key)
        del self._current[prev.key]
        self._history.setdefault(prev.key, []).append((rev, None))
        return Event(EventType.DELETE, KeyValue(prev.key, b"", 0, rev, 0, 0), prev)

    def _commit(self, rev: int, events: Sequence[Event]) -> None:
        self._rev = rev
        self._events.extend(events)
        for w in self._watchers:
            self._deliver(w, events)
        if self._retain is not None and rev - self._compacted >= 2 * self._retain:
            self._compact(rev - self._retain)

    def _deliver(self, w: _Watcher, events: Sequence[Event]) -> None:
        mine = tuple(
            e if w.prev_kv else replace(e, prev_kv=None)
            for e in events
            if e.key.startswith(w.prefix) and e.revision >= w.min_revision
        )
        if mine:
            w.queue.put_nowait(WatchBatch(mine, self._rev))

    async def compact(self, revision: int) -> None:
        self._tick()
        if revision <= self._compacted:
            raise Compacted(revision, self._compacted)
        if revision > self._rev:
            raise StoreError(
                f"cannot compact to revision {revision}: the store is only at {self._rev}"
            )
        self._compact(revision)

    def _compact(self, revision: int) -> None:
        self._compacted = revision
        self._events = [e for e in self._events if e.revision >= revision]
        for key, hist in list(self._history.items()):
            i = bisect.bisect_right(hist, revision, key=lambda h: h[0])
            keep = hist[i:]
            if i and hist[i - 1][1] is not None:
                keep.insert(0, hist[i - 1])
            if keep:
                self._history[key] = keep
            else:
                del self._history[key]

    # ---- watches ---------------------------------------------------------------------------

    async def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        self._tick()
        if start_revision and start_revision < self._compacted:
            raise Compacted(start_revision, self._compacted)
        w = _Watcher(prefix, prev_kv, asyncio.Queue(), start_revision)
        if start_revision:
            i = bisect.bisect_left(self._events, start_revision, key=lambda e: e.revision)
            backlog = self._events[i:]
            for _, group in itertools.groupby(backlog, key=lambda e: e.revision):
                self._deliver(w, list(group))
        self._watchers.append(w)
        try:
            while True:
                batch = await w.queue.get()
                if batch is None:
                    return
                if isinstance(batch, StoreError):
                    raise batch
                yield batch
        finally:
            self._watchers.remove(w)

    def break_watches(self, prefix: str, error: StoreError) -> int:
        """Fault injection: every open watch under ``prefix`` raises ``error`` after what it
        has already been sent (as an etcd watch stream that breaks). Returns how many."""
        hit = [w for w in self._watchers if w.prefix.startswith(prefix)]
        for w in hit:
            w.queue.put_nowait(error)
        return len(hit)

    # ---- leases ----------------------------------------------------------------------------

    async def grant_lease(self, ttl: int) -> Lease:
        self._tick()
        if ttl <= 0:
            raise StoreError(f"lease ttl must be positive, got {ttl}")
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl, self._clock.monotonic() + ttl)
        return Lease(lease_id, ttl)

    async def keepalive(self, lease_id: int) -> int:
        self._tick()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        lease.deadline = self._clock.monotonic() + lease.ttl
        return lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        self._tick()
        self._end_lease(lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        self._tick()
        lease = self._leases.get(lease_id)
        if lease is None:
            return -1
        return max(0, math.ceil(lease.deadline - self._clock.monotonic()))

    def _end_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None or not lease.keys:
            return
        rev = self._rev + 1
        events = [self._apply_delete(self._current[k], rev) for k in sorted(lease.keys)]
        self._commit(rev, events)

    def _tick(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        now = self._clock.monotonic()
        for lease_id in [i for i, le in self._leases.items() if le.deadline <= now]:
            self._end_lease(lease_id)

    async def run(self, tick: float = 0.25) -> None:
        """Expire leases as time passes, so watchers see expiries without other traffic."""
        while not self._closed:
            await self._clock.sleep(tick)
            if not self._closed:
                self._tick()

    async def close(self) -> None:
        self._closed = True
        for w in self._watchers:
            w.queue.put_nowait(None)
