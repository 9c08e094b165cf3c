"""Scrub: re-read every block, and every object row with an inline body, on this node at a
bounded rate, and verify them.

A block that fails its hash is moved to ``corrupt/`` by ``BlockStore.read_sync``; if it is
still referenced and a ``repair`` source is given (the replicated read, which asks the other
replicas), a good copy is fetched and written back. An object row whose inline body does
not match its ETag (``records.intact``) is handed to ``repair_row`` (the service's: read
the row from its replicas and merge the winner here, where an intact copy of the same write
outranks the damaged one). ``run`` loops forever at ``bytes_per_second`` (sleeping on the
injected clock), a full pass then ``pause`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BlockStore, CorruptBlock, MissingBlock, block_hash
from cloudless.objectstore.metadb import LwwTable
from cloudless.objectstore.records import BODY, intact

log = logging.getLogger(__name__)

ROWS_PER_READ = 32
"""Object rows read per statement (on the event loop: at most ~0.5 MB of 16 KiB rows)."""


@dataclass
class ScrubReport:
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    rows: int = 0
    """Object rows with an inline body checked."""
    corrupt_rows: list[str] = field(default_factory=list)
    repaired_rows: list[str] = field(default_factory=list)


class Scrubber:
    def __init__(
        self,
        blocks: BlockStore,
        clock: Clock,
        *,
        bytes_per_second: float = 16 << 20,
        pause: float = 7 * 24 * 3600.0,
        repair: Callable[[str], Awaitable[bytes]] | None = None,
        objects: LwwTable | None = None,
        repair_row: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.blocks = blocks
        self.clock = clock
        self.rate = bytes_per_second
        self.pause = pause
        self.repair = repair
        self.objects = objects
        self.repair_row = repair_row

    def _hashes(self) -> list[str]:
        return sorted(
            p.name for p in self.blocks.root.glob("??/??/*") if len(p.name) == 64 and p.is_file()
        )

    async def scrub_once(self) -> ScrubReport:
        report = ScrubReport()
        for h in self._hashes():
            size = 0
            try:
                size = len(self.blocks.read_sync(h))
            except MissingBlock:
                continue  # collected meanwhile
            except CorruptBlock:
                report.corrupt.append(h)
                await self._repair(h, report)
            report.checked += 1
            report.bytes += size
            await self._pace(size)
        if self.objects is not None:
            await self._scrub_rows(self.objects, report)
        return report

    async def _pace(self, size: int) -> None:
        if self.rate > 0 and size:
            await self.clock.sleep(size / self.rate)

    async def _scrub_rows(self, table: LwwTable, report: ScrubReport) -> None:
        after = ""
        while page := table.db.execute(
            f"SELECT pk, part, value FROM {table.name} WHERE pk > ? ORDER BY pk LIMIT ?",
            (after, ROWS_PER_READ),
        ).fetchall():
            after = page[-1][0]
            for pk, part, value in page:
                if value is None or BODY not in value:
                    continue
                report.rows += 1
                report.bytes += len(value)
                if not intact(value):
                    report.corrupt_rows.append(pk)
                    await self._repair_row(table, pk, part, report)
                await self._pace(len(value))

    async def _repair_row(self, table: LwwTable, pk: str, part: int, report: ScrubReport) -> None:
        if self.repair_row is None:
            return
        table.meta.forget(table.name, pk)  # the row cache may hold what was read before
        try:
            await self.repair_row(pk, part)
        except Exception as e:
            log.warning("scrub: object row %s is damaged here; its repair failed: %s", pk, e)
            return
        row = table.db.execute(f"SELECT value FROM {table.name} WHERE pk = ?", (pk,)).fetchone()
        if row is None or row[0] is None or intact(row[0]):
            report.repaired_rows.append(pk)
        else:
            log.warning("scrub: object row %s is damaged here and no replica could repair it", pk)

    async def _repair(self, h: str, report: ScrubReport) -> None:
        if self.repair is None or self.blocks.refcount(h) == 0:
            return
        try:
            data = await self.repair(h)
        except (MissingBlock, CorruptBlock) as e:
            log.warning("scrub: block %s is corrupt here and no replica could repair it: %s", h, e)
            return
        if block_hash(data) == h:
            await self.blocks.write(h, data)
            report.repaired.append(h)

    async def run(self) -> None:
        while True:
            try:
                r = await self.scrub_once()
                if r.corrupt or r.corrupt_rows:
                    log.warning(
                        "scrub: %d blocks checked, %d corrupt, %d repaired; %d inline rows"
                        " checked, %d damaged, %d repaired",
                        r.checked,
                        len(r.corrupt),
                        len(r.repaired),
                        r.rows,
                        len(r.corrupt_rows),
                        len(r.repaired_rows),
                    )
            except Exception:
                log.exception("scrub pass failed; next pass after the pause")
            await self.clock.sleep(self.pause)
