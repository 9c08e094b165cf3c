"""Anti-entropy, catch-up and tombstone collection between the owners of a partition.

* ``round()``: with each other owner, one call fetches the hash-tree roots (``merkle.py``)
  of every (table, partition) the two share; each that differs is walked down
  (``treesync.walk``) to the rows this node lacks or holds an older state of, which are
  pulled and merged, with the blocks their live references name (``PartitionSync.absorb``,
  paced to the repair rate; a block no replica serves now goes to the resync queue,
  ``resync.py``, and the partition still settles). Each owner runs its own rounds, so
  differences heal in both directions; what moves grows with the difference, not with the
  partition.
* ``catch_up()``: one round over every partition this node owns; each partition settled
  (compared, and whatever differed pulled) with at least one other owner (R >= 2) opens
  for reads (``Cluster.catching_up``), so a node back from downtime is not read from
  before it has what it missed, and serves the partitions it caught up on while the
  co-owners of others are still away.
* ``collect_tombstones()``: for partitions whose *first* owner is this node, tombstones older
  than the grace period are dropped once every owner holds exactly that tombstone: first on
  the others, then here (Garage's GC: a tombstone no replica lacks can no longer be
  resurrected by a merge). An owner holding an older state gets the tombstone pushed and the
  row waits for the next round; nothing is collected during a layout transition.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from cloudless.lib.clock import Clock
from cloudless.objectstore import treesync
from cloudless.objectstore.crdt import outranks
from cloudless.objectstore.layout import PARTITIONS
from cloudless.objectstore.merkle import Summary
from cloudless.objectstore.metadb import DiskFull
from cloudless.objectstore.replication import Cluster
from cloudless.objectstore.resync import BlockResync
from cloudless.objectstore.rpc import PeerError
from cloudless.objectstore.sync import TABLES, PartitionSync

log = logging.getLogger(__name__)
TOMBSTONE_GRACE_S = 24 * 3600.0


@dataclass
class RepairReport:
    partitions: int = 0
    compared: int = 0
    differed: int = 0
    rows: int = 0
    blocks: int = 0
    block_bytes: int = 0
    traffic: int = 0
    """Bytes of every comparison call, row and block this round moved (both directions)."""
    deferred: int = 0
    """Blocks no replica served, queued for resync (their partitions still settle)."""
    unreached: list[int] = field(default_factory=list)
    """Partitions no other owner answered for (at R >= 2)."""


class AntiEntropy:
    def __init__(
        self,
        cluster: Cluster,
        clock: Clock,
        *,
        interval: float = 60.0,
        tombstone_grace: float = TOMBSTONE_GRACE_S,
        repair_rate: float = 0.0,
        parallel: int = 4,
        resync: BlockResync | None = None,
    ) -> None:
        self.c = cluster
        self.clock = clock
        self.interval = interval
        self.tombstone_grace = tombstone_grace
        self.parallel = parallel
        self.sync = PartitionSync(cluster, clock, repair_rate, resync)

    def owned(self) -> list[int]:
        cur = self.c.history.current
        if cur is None:
            return []
        return [p for p in range(PARTITIONS) if self.c.me in cur.partitions[p]]

    def _owners(self, p: int) -> list[str]:
        return [n for n in self.c.write_targets(p) if n != self.c.me]

    async def compare(self, other: str, parts: list[int], report: RepairReport) -> set[int]:
        """Compare the roots of ``parts`` with ``other`` in one call, walk down each that
        differs and pull what this node lacks; returns the partitions settled with it."""
        peer = self.c.peers.get(other)
        if peer is None or not parts:
            return set()
        try:
            differ = await treesync.differing(peer, self.c.local, list(TABLES), parts)
        except PeerError as e:
            log.debug("anti-entropy: roots from %s: %s", other, e)
            return set()
        report.compared += len(parts)
        by_part: dict[int, list[tuple[str, Summary]]] = {}
        for table, p, root in differ:
            by_part.setdefault(p, []).append((table, root))
        report.differed += len(by_part)
        settled = set(parts) - set(by_part)
        slots = asyncio.Semaphore(self.parallel)

        async def one(p: int, tables: list[tuple[str, Summary]]) -> None:
            async with slots:
                try:
                    for table, root in tables:
                        rows = await treesync.fetch(peer, self.c.local, table, p, root)
                        got = await self.sync.absorb(table, p, rows, other)
                        report.rows += got.rows
                        report.blocks += got.blocks
                        report.deferred += got.deferred
                    settled.add(p)
                except PeerError as e:
                    log.debug("anti-entropy: partition %d with %s: %s", p, other, e)
                except DiskFull as e:  # not settled: the next round tries again
                    self.c.local.disk_full(e)

        async with asyncio.TaskGroup() as tg:
            for p, tables in sorted(by_part.items()):
                tg.create_task(one(p, tables))
        return settled

    async def round(self) -> RepairReport:
        """Compare every partition this node owns with each other owner (pulling only)."""
        report = RepairReport()
        before = self.sync.block_bytes
        meter = treesync.Meter()
        token = treesync.METER.set(meter)
        try:
            owned = self.owned()
            report.partitions = len(owned)
            shared: dict[str, list[int]] = {}
            for p in owned:
                for other in self._owners(p):
                    shared.setdefault(other, []).append(p)
            met: set[int] = set()
            for other, parts in sorted(shared.items()):
                met |= await self.compare(other, parts, report)
            report.unreached = [p for p in owned if self._owners(p) and p not in met]
        finally:
            treesync.METER.reset(token)
        report.block_bytes = self.sync.block_bytes - before
        report.traffic = meter.total
        return report

    async def catch_up(self) -> RepairReport:
        """One pass; each partition settled with another owner opens for reads
        (``Cluster.catching_up``), and all do once none is left unreached."""
        owned = set(self.owned())
        report = await self.round()
        self.c.catching_up -= owned - set(report.unreached)
        if not report.unreached:
            self.c.serving_reads = True
        return report

    async def collect_tombstones(self) -> int:
        if len(self.c.history.versions) != 1:
            return 0
        cur = self.c.layout
        cutoff = int((self.clock.now() - self.tombstone_grace) * 1000)
        dropped = 0
        for p in range(PARTITIONS):
            owners = cur.partitions[p]
            if not owners or owners[0] != self.c.me:
                continue
            for table in TABLES:
                dropped += await self._collect(table, p, cutoff)
        return dropped

    async def _collect(self, table: str, p: int, cutoff_ms: int) -> int:
        rows = self.c.local.raw(table).tombstones(p, cutoff_ms, 200)
        if not rows:
            return 0
        others = [n for n in self.c.layout.partitions[p] if n != self.c.me]
        agreed = []
        for pk, tomb in rows:
            everywhere = True
            for other in others:
                peer = self.c.peers.get(other)
                if peer is None:
                    everywhere = False
                    break
                try:
                    theirs = await peer.entry(table, pk, p)
                    if theirs != tomb:
                        everywhere = False
                        if theirs is None or outranks(tomb, theirs):
                            await peer.merge(table, [(pk, p, tomb)])
                except PeerError:
                    everywhere = False
                    break
            if everywhere:
                agreed.append((pk, tomb))
        if not agreed:
            return 0
        for other in others:
            try:
                await self.c.peers[other].forget(table, agreed)
            except PeerError:
                return 0  # retried next round; a forget is idempotent
        local = self.c.local.raw(table)
        return sum(local.forget(pk, tomb) for pk, tomb in agreed)

    async def run(self) -> None:
        while True:
            try:
                r = await self.round()
                if r.differed:
                    log.info(
                        "anti-entropy: %d of %d comparisons differed; %d rows, %d blocks pulled",
                        r.differed,
                        r.compared,
                        r.rows,
                        r.blocks,
                    )
                if self.c.serving_reads:
                    n = await self.collect_tombstones()
                    if n:
                        log.info("tombstone GC: %d tombstones dropped on every replica", n)
            except DiskFull as e:
                self.c.local.disk_full(e)
            except Exception:
                log.exception("anti-entropy round failed; retrying in %.0f s", self.interval)
            await self.clock.sleep(self.interval)
