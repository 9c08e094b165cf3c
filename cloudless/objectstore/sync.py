"""Partition sync: a node copies the partitions a new layout version gives it from their
previous owners, so it can acknowledge the version (``history.ack_synced``).

``pull(partition, source)`` merges every row of the partition, in every metadata table, from
``source`` into this node, then fetches each block a live ``block_refs`` row names that this
node lacks. Merging is idempotent, so a pull interrupted half-way is simply run again.
``sync_to(version)`` pulls each partition this node owns in ``version`` but did not own in
the version reads still use, from a read quorum of that version's owners (an acknowledged
write is on a write quorum, which every read quorum meets).

A block that neither the source nor any replica serves is queued in the block resync queue
(``resync.py``, when one is given) and the rest of the partition goes on; it is *deferred*.
Anti-entropy counts a partition with deferred blocks as settled (its rows are; a read of the
block goes to the replicas that have it). ``sync_to`` does not: a partition whose pulls
deferred a block is not synced, so the version is not acknowledged while one of its blocks
is on no new owner (the next beat pulls again; the queue retries meanwhile). Except for a
block *lost*: one that every owner of the read version has answered, for at least
``LOST_AFTER_S`` on this node's clock, that it does not hold (none unreachable, none with
a corrupt copy; ``NowhereBlock``): the new owner is then as complete as the old ones, and
waiting on it would hold the transition, and with it every later layout change (the
replacement of dead nodes included), for ever. A lost block stays in the resync queue, is
logged as a warning, and counted in ``SyncReport.lost``; the objects that need it were
unreadable before the transition and stay so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass

from cloudless.lib.clock import Clock
from cloudless.objectstore import quorum
from cloudless.objectstore.blocks import MissingBlock, NowhereBlock, block_hash
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.layout import PARTITIONS, LayoutVersion
from cloudless.objectstore.local import BLOCK_REFS, REPLICATED
from cloudless.objectstore.replication import Cluster, ReplicatedBlocks
from cloudless.objectstore.resync import BlockResync
from cloudless.objectstore.rpc import PeerError

log = logging.getLogger(__name__)
TABLES = REPLICATED
PAGE = 500
LOST_AFTER_S = 3600.0


class NowhereError(PeerError):
    """A block every owner of the read version said it does not hold."""


@dataclass
class SyncReport:
    partitions: int = 0
    rows: int = 0
    blocks: int = 0
    deferred: int = 0
    """Blocks no replica served, left to the resync queue."""
    lost: int = 0
    """Blocks every old owner has said for ``LOST_AFTER_S`` it does not hold (queued too;
    they hold no partition back)."""
    failed: tuple[int, ...] = ()
    """Partitions no previous owner could serve (the version must not be acknowledged)."""


@dataclass(frozen=True)
class Absorbed:
    rows: int
    blocks: int
    deferred: int
    """Blocks no replica served now, queued for resync (or, without a queue, none: the
    failure is raised)."""
    lost: int = 0
    """Blocks queued that no old owner has held for ``LOST_AFTER_S`` (not ``deferred``)."""


class PartitionSync:
    def __init__(
        self,
        cluster: Cluster,
        clock: Clock | None = None,
        rate: float = 0.0,
        resync: BlockResync | None = None,
        nowhere: dict[str, float] | None = None,
    ) -> None:
        """``rate``: the repair bandwidth in block bytes per second (0: unthrottled), paced
        on ``clock`` so a replacement or a catch-up never floods the links. ``resync``: where
        blocks no replica serves now are queued (None: such a block fails the pull).
        ``nowhere``: block -> when (``clock.monotonic``) every old owner first said it has
        not got it, kept by the caller across syncs (without a clock no block is lost)."""
        self.c = cluster
        self.resync = resync
        self.nowhere = {} if nowhere is None else nowhere
        self.clock = clock
        self.rate = rate
        self.block_bytes = 0
        """Bytes of blocks fetched so far (catch-up and repair traffic, for measurements)."""
        self._start: float | None = None
        self._paced = 0
        self._pacing = asyncio.Lock()

    async def pace(self, n: int) -> None:
        """Sleep until ``n`` more bytes fit the rate since the first paced byte."""
        if self.clock is None or self.rate <= 0:
            return
        async with self._pacing:  # concurrent pulls wait their turn, not all at once
            now = self.clock.monotonic()
            if self._start is None:
                self._start = now
            self._paced += n
            due = self._start + self._paced / self.rate
            if due > now:
                await self.clock.sleep(due - now)

    async def pull(self, partition: int, source: str) -> Absorbed:
        """Copy ``partition`` from ``source``. Raises ``PeerError`` if ``source`` does not
        answer."""
        peer = self.c.peers[source]
        rows = blocks = deferred = lost = 0
        for table in TABLES:
            after = ""
            while True:
                page = await peer.partition_page(table, partition, after, PAGE)
                got = await self.absorb(table, partition, page, source)
                rows, blocks, deferred, lost = (
                    rows + got.rows,
                    blocks + got.blocks,
                    deferred + got.deferred,
                    lost + got.lost,
                )
                if len(page) < PAGE:
                    break
                after = page[-1][0]
        return Absorbed(rows, blocks, deferred, lost)

    def _lost(self, h: str, nowhere: bool) -> bool:
        """Whether block ``h``, which no replica served, counts as lost (see the module)."""
        if not nowhere or self.clock is None:
            self.nowhere.pop(h, None)
            return False
        now = self.clock.monotonic()
        return now - self.nowhere.setdefault(h, now) >= LOST_AFTER_S

    async def absorb(
        self, table: str, partition: int, rows: list[tuple[str, Entry]], source: str
    ) -> Absorbed:
        """Merge ``rows`` of ``source``'s and fetch the blocks live references among them
        name that this node lacks (paced); a block no replica serves is queued for resync
        (``deferred``) or, without a queue, fails the call with ``PeerError``."""
        blocks = deferred = lost = 0
        for pk, e in rows:
            self.c.local.merge(table, pk, partition, e)
            if table == BLOCK_REFS and e.value is not None:
                h = pk.split("/", 1)[0]
                if not self.c.local.blocks.has(h):
                    try:
                        data = await self._block(source, h)
                    except PeerError as err:
                        if self.resync is None:
                            raise
                        self.resync.queue(h, str(err))
                        if self._lost(h, isinstance(err, NowhereError)):
                            log.warning("block %s is on no replica (all have said so for "
                                        "%.0f s): it no longer holds the sync of partition "
                                        "%d", h, LOST_AFTER_S, partition)  # fmt: skip
                            lost += 1
                        else:
                            deferred += 1
                        continue
                    self.nowhere.pop(h, None)
                    await self.c.local.blocks.write(h, data)
                    self.block_bytes += len(data)
                    blocks += 1
                    await self.pace(len(data))
        return Absorbed(len(rows), blocks, deferred, lost)

    async def _block(self, source: str, h: str) -> bytes:
        """Block ``h`` from ``source``, or from any replica if ``source`` lacks it (a row's
        write quorum need not be its block's: the block may still be on its way there)."""
        try:
            data = await self.c.peers[source].get_block(h)
            if block_hash(data) == h:
                return data
        except MissingBlock:
            pass
        try:
            return await ReplicatedBlocks(self.c).read(h)
        except NowhereBlock as e:
            raise NowhereError(f"block {h}: not on {source} nor any replica ({e})") from None
        except MissingBlock as e:
            raise PeerError(f"block {h}: not on {source} nor any replica ({e})") from None

    async def sync_to(
        self,
        version: LayoutVersion,
        *,
        parallel: int = 4,
        only: Collection[int] | None = None,
    ) -> SyncReport:
        """Pull every partition ``version`` gives this node (or those of them in ``only``:
        the ones an earlier call left failed), ``parallel`` at a time (their row pages
        overlap the pacing of their blocks)."""
        old = self.c.history.read_version()
        assert old is not None
        report = SyncReport()
        failed: list[int] = []
        slots = asyncio.Semaphore(parallel)

        async def one(p: int) -> None:
            async with slots:
                # A write was acknowledged by W old owners, not all: pull from a read quorum
                # of them so every acknowledged write is seen at least once.
                need, got = quorum.read_quorum(old.replication), 0
                for source in old.partitions[p]:
                    if got >= need:
                        break
                    try:
                        pulled = await self.pull(p, source)
                    except PeerError:
                        continue
                    report.rows += pulled.rows
                    report.blocks += pulled.blocks
                    report.deferred += pulled.deferred
                    report.lost += pulled.lost
                    if not pulled.deferred:
                        got += 1
                if got < need:
                    failed.append(p)

        gained = [
            p
            for p in range(PARTITIONS)
            if self.c.me in version.partitions[p]
            and self.c.me not in old.partitions[p]
            and (only is None or p in only)
        ]
        report.partitions = len(gained)
        async with asyncio.TaskGroup() as tg:
            for p in gained:
                tg.create_task(one(p))
        failed.sort()
        report.failed = tuple(failed)
        return report
