"""``EventCompactor``: the leader keeps the events table inside its window.

Each pass lists the table's keys, asks ``outside_window`` what to delete and deletes it in
fenced transactions of ``bounds.batch`` keys. Deleting a key that is already gone is a no-op,
so a pass that overlaps another coordinator's (a leadership change mid-pass) is harmless.
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

    async def compact_once(self) -> int:
        """One pass; returns how many events it deleted."""
        listing = await self.store.list(self.prefix)
        names = [kv.key[len(self.prefix) :] for kv in listing.kvs]
        doomed = outside_window([(event_time(n), n) for n in names], self.bounds, self.clock.now())
        size = self.bounds.batch
        for i in range(0, len(doomed), size):
            ops = [Delete(self.prefix + n) for n in doomed[i : i + size]]
            await fenced_txn(self.store, self.fence, (), ops)
            self.deleted += len(ops)
        if doomed:
            log.info(
                "deleted %d events outside the window (%d kept)",
                len(doomed),
                len(names) - len(doomed),
            )
        return len(doomed)
