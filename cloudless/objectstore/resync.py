"""The block resync queue: blocks this node should hold but could not fetch yet, retried
with exponential backoff until they arrive or nothing needs them any more.

Anti-entropy and partition sync merge a partition's rows and fetch the blocks their live
references name; a block no replica could serve at that moment (its holders down, or still
on its way to them) is queued here instead of failing the whole partition. The queue is a
table of the node's SQLite file (``block_resync``), so a restart keeps it.

Each pass (``resync_once``) takes the entries that are due, oldest first, and for each:

* the block is here and whole (``BlockStore.has``): done;
* no live reference names it any more (the object was deleted or overwritten): done;
* otherwise it is fetched through ``fetch`` (the replicated read: every replica in turn),
  hash-checked and written; a failure counts an error and schedules the next try
  ``backoff(errors)`` later (30 s, 60 s, 2 min, ... capped at 1 h), with the reason kept
  for ``pending()``.

Time comes from the injected clock; ``run`` wakes when an entry is due or one is queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BlockStore, block_hash
from cloudless.objectstore.metadb import DiskFull

log = logging.getLogger(__name__)

FIRST_RETRY_S = 30.0
MAX_RETRY_S = 3600.0
IDLE_S = 60.0
"""How long ``run`` sleeps when nothing is queued (a ``queue`` call wakes it sooner)."""


def backoff(errors: int) -> float:
    """Seconds before the next try of a block that failed ``errors`` times (>= 1)."""
    if errors < 1:
        raise ValueError(f"errors {errors}: a retry follows at least one failure")
    return min(FIRST_RETRY_S * 2.0 ** min(errors - 1, 30), MAX_RETRY_S)


@dataclass(frozen=True)
class Pending:
    hash: str
    due: float
    errors: int
    reason: str


@dataclass
class ResyncReport:
    fetched: list[str] = field(default_factory=list)
    bytes: int = 0
    dropped: list[str] = field(default_factory=list)
    """Done without a fetch: already here, or no longer referenced."""
    failed: dict[str, str] = field(default_factory=dict)
    """Hash -> why, each rescheduled after its backoff."""


class BlockResync:
    def __init__(
        self,
        blocks: BlockStore,
        clock: Clock,
        fetch: Callable[[str], Awaitable[bytes]],
        *,
        pace: Callable[[int], Awaitable[None]] | None = None,
        batch: int = 64,
    ) -> None:
        """``fetch(h)``: block ``h`` from another replica (raises when none has it);
        ``pace(n)``: waits until ``n`` more bytes fit the repair rate."""
        self.blocks = blocks
        self.clock = clock
        self.fetch = fetch
        self.pace = pace
        self.batch = batch
        self.db = blocks.db
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS block_resync (hash TEXT PRIMARY KEY, due REAL NOT NULL,"
            " errors INTEGER NOT NULL, reason TEXT NOT NULL)"
        )
        self._wake = asyncio.Event()

    def queue(self, h: str, reason: str) -> None:
        """Queue block ``h`` (due now); one already queued keeps its schedule."""
        self.blocks.path(h)  # a malformed hash is refused here, not at fetch time
        self.db.execute(
            "INSERT OR IGNORE INTO block_resync(hash, due, errors, reason) VALUES (?, ?, 0, ?)",
            (h, self.clock.now(), reason),
        )
        self._wake.set()

    def count(self) -> int:
        """Blocks in the queue."""
        return int(self.db.execute("SELECT count(*) FROM block_resync").fetchone()[0])

    def pending(self) -> list[Pending]:
        rows = self.db.execute("SELECT hash, due, errors, reason FROM block_resync ORDER BY due")
        return [Pending(h, due, n, why) for h, due, n, why in rows]

    def __contains__(self, h: object) -> bool:
        row = self.db.execute("SELECT 1 FROM block_resync WHERE hash = ?", (h,)).fetchone()
        return row is not None

    def next_due(self) -> float | None:
        (due,) = self.db.execute("SELECT MIN(due) FROM block_resync").fetchone()
        return None if due is None else float(due)

    async def resync_once(self) -> ResyncReport:
        """Try every entry due now (up to ``batch``)."""
        report = ResyncReport()
        now = self.clock.now()
        due = self.db.execute(
            "SELECT hash, errors FROM block_resync WHERE due <= ? ORDER BY due LIMIT ?",
            (now, self.batch),
        ).fetchall()
        for h, errors in due:
            if self.blocks.has(h) or self.blocks.refcount(h) == 0:
                self._done(h)
                report.dropped.append(h)
                continue
            try:
                data = await self.fetch(h)
                if block_hash(data) != h:
                    raise ValueError("the copy fetched does not match its hash")
                await self.blocks.write(h, data)
            except Exception as e:  # any failure is retried later; the reason is kept
                why = f"{type(e).__name__}: {e}"
                n = errors + 1
                self.db.execute(
                    "UPDATE block_resync SET due = ?, errors = ?, reason = ? WHERE hash = ?",
                    (self.clock.now() + backoff(n), n, why, h),
                )
                report.failed[h] = why
                continue
            self._done(h)
            report.fetched.append(h)
            report.bytes += len(data)
            if self.pace is not None:
                await self.pace(len(data))
        return report

    def _done(self, h: str) -> None:
        self.db.execute("DELETE FROM block_resync WHERE hash = ?", (h,))

    async def run(self) -> None:
        while True:
            try:
                r = await self.resync_once()
                if r.fetched or r.failed:
                    log.info(
                        "block resync: %d fetched (%d bytes), %d failed (retried with backoff)",
                        len(r.fetched),
                        r.bytes,
                        len(r.failed),
                    )
            except DiskFull as e:
                log.warning("block resync pass failed: %s; retrying in %.0f s", e, FIRST_RETRY_S)
            except Exception:
                log.exception("block resync pass failed; retrying in %.0f s", FIRST_RETRY_S)
            nxt = self.next_due()
            wait = IDLE_S if nxt is None else min(IDLE_S, max(0.0, nxt - self.clock.now()))
            self._wake.clear()
            sleeper = asyncio.ensure_future(self.clock.sleep(wait))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (sleeper, woken):
                    t.cancel()
                await asyncio.gather(sleeper, woken, return_exceptions=True)
