"""Scrub: re-read every block on this node at a bounded rate and verify its hash.

A block that fails is moved to ``corrupt/`` by ``BlockStore.read_sync``; if it is still
referenced and a ``repair`` source is given (the replicated read, which asks the other
replicas), a good copy is fetched and written back. ``run`` loops forever at
``bytes_per_second`` (sleeping on the injected clock), a full pass then ``pause`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BlockStore, CorruptBlock, MissingBlock, block_hash

log = logging.getLogger(__name__)


@dataclass
class ScrubReport:
    checked: int = 0
    bytes: int = 0
    corrupt: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


class Scrubber:
    def __init__(
        self,
        blocks: BlockStore,
        clock: Clock,
        *,
        bytes_per_second: float = 16 << 20,
        pause: float = 7 * 24 * 3600.0,
        repair: Callable[[str], Awaitable[bytes]] | None = None,
    ) -> None:
        self.blocks = blocks
        self.clock = clock
        self.rate = bytes_per_second
        self.pause = pause
        self.repair = repair

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
            if self.rate > 0 and size:
                await self.clock.sleep(size / self.rate)
        return report

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
                if r.corrupt:
                    log.warning(
                        "scrub: %d blocks checked, %d corrupt, %d repaired",
                        r.checked,
                        len(r.corrupt),
                        len(r.repaired),
                    )
            except Exception:
                log.exception("scrub pass failed; next pass after the pause")
            await self.clock.sleep(self.pause)
