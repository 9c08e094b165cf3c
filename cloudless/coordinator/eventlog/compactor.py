"""``EventCompactor``: the leader keeps the events table inside its window.

Each pass reads the table's oldest keys a slice at a time with the table's count, asks
``outside_window`` which to delete and deletes them in fenced transactions of
``bounds.batch`` keys, until a slice is not wholly outside the window. Deleting a key that
is already gone is a no-op, so a pass that overlaps another coordinator's (a leadership
change mid-pass) is harmless.
The store's own history of the deleted events is dropped by etcd's revision auto-compaction
(``cloudless/store/etcd_process.py``) or ``MemoryStore(retain_revisions=...)``.
"""

from __future__ import annotations

import logging

from cloudless.coordinator.eventlog.window import EventBounds, event_time, outside_window
from cloudless.lib.clock import Clock
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import NO_FENCE, Fence, fenced_txn
from cloudless.store.protocol import Store
from cloudless.store.types import Delete

log = logging.getLogger("cloudless.coordinator.events")


class EventCompactor:
    def __init__(
        self,
        store: Store,
        prefix: str,
        bounds: EventBounds,
        clock: Clock,
        *,
        fence: Fence = NO_FENCE,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.bounds = bounds
        self.clock = clock
        self.fence = fence
        self.deleted = 0  # over this compactor's life, for tests and logs

    async def run(self) -> None:
        """A pass now, then one every ``bounds.interval_s``, until cancelled. A store error
        skips one pass; losing the leadership (``Fenced``) ends the loop."""
        while True:
            try:
                await self.compact_once()
            except Fenced:
                raise
            except StoreError as e:
                log.warning(
                    "event compaction pass failed (%s); next in %gs", e, self.bounds.interval_s
                )
            await self.clock.sleep(self.bounds.interval_s)

    # Keys read per look at the table: ten delete batches' worth.
    LOOK = 10

    async def compact_once(self) -> int:
        """One pass; returns how many events it deleted. Looks at the table's oldest keys a
        slice at a time (``Store.keys``: the first keys and the count of all, no values), so
        a pass with nothing to do is one small read whatever the table's size."""
        deleted, size = 0, self.bounds.batch
        look = size * self.LOOK
        while True:
            head = await self.store.keys(self.prefix, limit=look)
            names = [k[len(self.prefix) :] for k in head.keys]
            doomed = outside_window(
                [(event_time(n), n) for n in names], head.count, self.bounds, self.clock.now()
            )
            for i in range(0, len(doomed), size):
                ops = [Delete(self.prefix + n) for n in doomed[i : i + size]]
                await fenced_txn(self.store, self.fence, (), ops)
                deleted += len(ops)
                self.deleted += len(ops)
            if len(doomed) < look:
                break  # the rest of the table is inside the window
        if deleted:
            log.info("deleted %d events outside the window", deleted)
        return deleted
