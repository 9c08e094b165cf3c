"""One node's storage behind the engine's seams: its SQLite tables and its block directory.

Every metadata change, local or received from a peer, goes through ``LocalStore.merge``,
which also re-checks a block's reference count when one of its ``block_refs`` rows changes
(queueing it for delayed GC at zero, rescuing it otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import BinaryIO

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BlockStore, CorruptBlock, MissingBlock
from cloudless.objectstore.crdt import Entry, next_timestamp
from cloudless.objectstore.metadb import DiskFull, LwwTable, MetaDb, full
from cloudless.objectstore.records import OBJECTS, PARTS, PUTTING, UPLOADS, VERSION_BLOCKS
from cloudless.objectstore.seams import Commit

log = logging.getLogger(__name__)

BLOCK_REFS = "block_refs"
FULL_EVERY_S = 60.0
"""How often a node whose disk is full says so in its log (each refused write would)."""
FULL_HOLD_S = 120.0
"""How long after its last write refused for want of room a node reports it is refusing
writes (``refusing_writes``)."""
REPLICATED = (OBJECTS, VERSION_BLOCKS, UPLOADS, PARTS, BLOCK_REFS, PUTTING)
"""The tables replicated between nodes: the only ones a peer may name."""


class LocalStore:
    def __init__(self, meta: MetaDb, blocks: BlockStore, clock: Clock) -> None:
        self.meta = meta
        self.blocks = blocks
        self.clock = clock
        self._tables: dict[str, LocalTable] = {}
        self._full_said: float | None = None
        self._full_at: float | None = None

    def disk_full(self, e: DiskFull) -> None:
        """Note that a write failed for want of room here, and say so at most once every
        ``FULL_EVERY_S`` (the writer hears it in its answer every time)."""
        now = self._full_at = self.clock.monotonic()
        if self._full_said is None or now - self._full_said >= FULL_EVERY_S:
            self._full_said = now
            log.warning("%s: writes to this node fail until there is room; reads go on", e)

    def noted_full(self, e: BaseException, what: str) -> bool:
        """If ``e`` says this node's disk is full (``metadb.full``), note it as
        ``disk_full`` does, naming ``what`` failed, and return True."""
        if not full(e):
            return False
        self.disk_full(e if isinstance(e, DiskFull) else DiskFull(self.writer, what))
        return True

    def refusing_writes(self) -> bool:
        """Whether a write failed here for want of room in the last ``FULL_HOLD_S``."""
        at = self._full_at
        return at is not None and self.clock.monotonic() - at < FULL_HOLD_S

    @property
    def writer(self) -> str:
        return self.meta.writer

    def replicated(self, name: object) -> LwwTable:
        """``raw`` for a table name a peer sent; ``ValueError`` unless it is one of
        ``REPLICATED`` (this node's other tables are its own business)."""
        if name not in REPLICATED:
            raise ValueError(f"table {name!r} is not replicated between nodes")
        return self.raw(str(name))

    def raw(self, name: str) -> LwwTable:
        return self.meta.table(name)

    def merge(self, table: str, pk: str, partition: int, entry: Entry) -> Entry:
        return self.apply(table, pk, partition, entry)[1]

    def apply(
        self, table: str, pk: str, partition: int, entry: Entry
    ) -> tuple[Entry | None, Entry]:
        """``merge`` that also returns the row's state before it."""
        return self.apply_many([(table, pk, partition, entry)])[0]

    def apply_many(
        self, rows: Sequence[tuple[str, str, int, Entry]]
    ) -> list[tuple[Entry | None, Entry]]:
        """``apply`` each ``(table, pk, partition, entry)`` in one transaction (one commit
        for a block's rows instead of one per row); the states before and after, in order."""
        out: list[tuple[Entry | None, Entry]] = []
        tables = {t: self.meta.table(t) for t in {r[0] for r in rows}}  # created outside
        with self.meta.transaction():
            for table, pk, partition, entry in rows:
                before, after = tables[table].apply_in_transaction(pk, partition, entry)
                if table == BLOCK_REFS and after is not before:
                    # a reference that is live now needs no count to keep its block
                    live = after.value is not None
                    self.blocks.reconsider(pk.split("/", 1)[0], self.clock.now(), live=live)
                out.append((before, after))
        return out

    async def together(
        self,
        reads: Sequence[tuple[str, str, int]],
        fresh: Sequence[tuple[str, str, int, bytes | None]],
        blocks: Sequence[tuple[str, bytes]],
        now_ms: int,
    ) -> list[Entry | None]:
        """``Tables.together`` on this node: blocks written with ``durable=False`` (the
        engine's ``Blocks.sync`` makes them durable), rows in one transaction."""
        for h, data in blocks:
            await self.blocks.write(h, data, durable=False)
        if fresh:
            self.apply_many([(t, pk, p, Entry(now_ms, self.writer, v)) for t, pk, p, v in fresh])
        return [self.meta.table(t).entry(pk) for t, pk, _ in reads]

    def table(self, name: str) -> LocalTable:
        if name not in self._tables:
            self._tables[name] = LocalTable(self, name)
        return self._tables[name]


class LocalTable:
    def __init__(self, store: LocalStore, name: str) -> None:
        self.store = store
        self.name = name
        self.rows = store.raw(name)

    async def entry(self, pk: str, partition: int) -> Entry | None:
        return self.rows.entry(pk)

    async def put(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, *, fresh: bool = False
    ) -> Entry:
        return (await self.swap(pk, partition, value, now_ms))[1]

    async def swap(
        self, pk: str, partition: int, value: bytes | None, now_ms: int
    ) -> tuple[Entry | None, Entry]:
        prev = self.rows.entry(pk)
        return prev, (await self.commit(pk, partition, value, now_ms, prev)).entry

    async def commit(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, prev: Entry | None
    ) -> Commit:
        e = Entry(next_timestamp(now_ms, prev), self.store.writer, value)
        reply = self.store.apply(self.name, pk, partition, e)
        return Commit(e, prev, (reply,), complete=True)

    async def range(
        self,
        partition: int,
        start: str,
        *,
        prefix: str = "",
        limit: int = 1000,
        include_start: bool = True,
        shallow: bool = False,
    ) -> list[tuple[str, Entry]]:
        """``shallow``: heads only (``LwwTable.range(heads=True)``)."""
        return self.rows.range(
            start, prefix=prefix, limit=limit, include_start=include_start, heads=shallow
        )


class LocalBlocks:
    def __init__(self, blocks: BlockStore) -> None:
        self.blocks = blocks

    async def write(self, h: str, data: bytes, *, durable: bool = True) -> None:
        await self.blocks.write(h, data, durable=durable)

    async def sync(self, hashes: list[str]) -> None:
        await self.blocks.sync(hashes)

    async def read(self, h: str) -> bytes:
        return await self.blocks.read(h)

    async def open(self, h: str) -> BinaryIO | None:
        try:
            return await self.blocks.open(h)
        except (MissingBlock, CorruptBlock):
            return None
