"""The engine's two seams: metadata tables and block storage.

``local.py`` implements both on one node's disk; ``replication.py`` implements both over the
nodes a layout assigns, with read and write quorums. The engine cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cloudless.objectstore.crdt import Entry, merge


@dataclass(frozen=True)
class Commit:
    """What a ``MetaTable.commit`` did: the entry it wrote, the state the caller read before
    (``prev``), and each acknowledging replica's ``(before, after)`` merge states.

    ``complete`` is false when some acknowledging replica did not report its states (a peer
    that predates these replies); the caller must then read the row again to learn whether
    it lost."""

    entry: Entry
    prev: Entry | None
    replies: tuple[tuple[Entry | None, Entry], ...]
    complete: bool = True

    @property
    def winner(self) -> Entry:
        """The latest state any acknowledging replica holds after the write."""
        w = self.entry
        for _, after in self.replies:
            w = merge(w, after)
        return w

    @property
    def lost(self) -> bool:
        """A replica already held a later entry: the write is superseded."""
        return self.winner != self.entry

    def superseded(self) -> list[Entry]:
        """Live states this write (or the one that beat it) replaced: the state read before
        and every state a replica held before, except the winner. Releasing one twice is
        harmless; missing one leaks it, so every replica's report counts."""
        out: list[Entry] = []
        for e in (self.prev, *(before for before, _ in self.replies)):
            if (
                e is not None
                and e.value is not None
                and e not in (self.winner, self.entry)
                and e not in out
            ):
                out.append(e)
        return out


class MetaTable(Protocol):
    name: str

    async def entry(self, pk: str, partition: int) -> Entry | None:
        """The row's current state (tombstones included), or None if never written.
        Replicated: the merge of a read quorum's answers."""
        ...

    async def put(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, *, fresh: bool = False
    ) -> Entry:
        """Write the row (``None``: tombstone) stamped ``max(now, previous + 1)``; returns the
        entry written. ``fresh``: the caller guarantees ``pk`` was never written before (a
        new version's rows), so no previous state is read and the stamp is ``now``. Raises
        ``S3Error('ServiceUnavailable')`` without a write quorum."""
        ...

    async def swap(
        self, pk: str, partition: int, value: bytes | None, now_ms: int
    ) -> tuple[Entry | None, Entry]:
        """``put`` that also returns the state it superseded (replicated: the merge of the
        read quorum it stamped against), in one read and one write."""
        ...

    async def commit(
        self, pk: str, partition: int, value: bytes | None, now_ms: int, prev: Entry | None
    ) -> Commit:
        """Write the row over ``prev``, the state the caller read (``entry``, possibly while
        doing other work): stamped ``max(now, prev + 1)``, one write round trip. The result
        says what each acknowledging replica held before and after, so the caller learns
        what it superseded and whether a concurrent later write beat it without reading
        again."""
        ...

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
        """Rows of ``partition`` from ``start`` under ``prefix`` in byte order, tombstones
        included, at most ``limit``. ``shallow`` (object records only, for a listing): a
        replica may answer each record without its inline body (``records.listed``), so a
        page of small objects does not carry their bytes over the network; a caller that
        asks for it reads only the heads."""
        ...


class Tables(Protocol):
    def table(self, name: str) -> MetaTable: ...

    async def together(
        self,
        reads: Sequence[tuple[str, str, int]],
        fresh: Sequence[tuple[str, str, int, bytes | None]],
        blocks: Sequence[tuple[str, bytes]],
        now_ms: int,
    ) -> list[Entry | None]:
        """One round trip's worth of work, one call per node: store ``blocks`` ``(hash,
        bytes)`` as ``Blocks.write(durable=False)``, write ``fresh`` rows ``(table, pk,
        partition, value)`` as ``MetaTable.put(fresh=True)`` stamped ``now_ms``, and read
        ``reads`` ``(table, pk, partition)`` as ``MetaTable.entry`` (their states, in order).
        Raises ``S3Error('ServiceUnavailable')`` as those do; on an error some of the writes
        may have landed (blind fresh rows and content-addressed blocks: a retry is safe)."""
        ...


class Blocks(Protocol):
    async def write(self, h: str, data: bytes, *, durable: bool = True) -> None:
        """Store block ``h`` (on a write quorum of its nodes when replicated); durable on
        return unless ``durable=False``, which defers that to ``sync``."""
        ...

    async def sync(self, hashes: list[str]) -> None:
        """Make the blocks written with ``durable=False`` durable (a no-op if all are)."""
        ...

    async def read(self, h: str) -> bytes:
        """Block ``h``'s bytes, hash-checked; raises ``MissingBlock`` if no node has it."""
        ...

    async def open(self, h: str) -> BinaryIO | None:
        """This node's file of block ``h``, open at offset 0 (the caller closes it), hashed
        first unless it is unchanged since this node wrote or verified it (``blocks.py``);
        None when this node cannot serve it from its own disk (not one of its nodes, absent,
        or corrupt and quarantined): ``read`` it then."""
        ...
