"""The engine's two seams: metadata tables and block storage.

``local.py`` implements both on one node's disk; ``replication.py`` implements both over the
nodes a layout assigns, with read and write quorums. The engine cannot tell them apart.
"""

from __future__ import annotations

from typing import Protocol

from cloudless.objectstore.crdt import Entry


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

    async def range(
        self,
        partition: int,
        start: str,
        *,
        prefix: str = "",
        limit: int = 1000,
        include_start: bool = True,
    ) -> list[tuple[str, Entry]]:
        """Rows of ``partition`` from ``start`` under ``prefix`` in byte order, tombstones
        included, at most ``limit``."""
        ...


class Tables(Protocol):
    def table(self, name: str) -> MetaTable: ...


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
