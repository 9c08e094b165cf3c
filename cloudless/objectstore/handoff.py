"""Hinted handoff: a write an owner missed is kept by a fallback node and handed back.

When an owner of a partition does not answer, the coordinator asks a fallback node (one that
does not own the partition; ``fallbacks`` orders them per partition so hints spread) to keep
the row or block *for that owner*. The hint counts toward the write quorum, so R=2 stays
writable with one owner down. ``Handoff.run`` delivers hints to their owners once they answer
and only then forgets them (a delivery is a merge: repeating it is harmless).

Hints live in the fallback's own SQLite file (table ``hints``) and, for blocks, in its block
directory (unreferenced there: removed after delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cloudless.lib.clock import Clock
from cloudless.objectstore.crdt import Entry, outranks
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import DiskFull
from cloudless.objectstore.rpc import Peer, PeerError

log = logging.getLogger(__name__)
BLOCK = "<block>"


def fallbacks(partition: int, owners: Sequence[str], nodes: Sequence[str]) -> list[str]:
    """Nodes that may hold hints for ``partition``: non-owners, in a per-partition order."""
    others = sorted(set(nodes) - set(owners))
    if not others:
        return []
    k = partition % len(others)
    return others[k:] + others[:k]


@dataclass(frozen=True)
class Hint:
    target: str
    table: str
    pk: str
    partition: int
    entry: Entry | None


class HintStore:
    def __init__(self, local: LocalStore) -> None:
        self.local = local
        self.db = local.meta.db
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS hints (target TEXT, tbl TEXT, pk TEXT, part INTEGER,"
            " ts INTEGER, writer TEXT, value BLOB, PRIMARY KEY (target, tbl, pk))"
        )

    def add(self, target: str, table: str, pk: str, partition: int, e: Entry) -> None:
        """Keep ``e`` for ``target``; a newer entry for the same row replaces an older one."""
        row = self.db.execute(
            "SELECT ts, writer, value FROM hints WHERE target=? AND tbl=? AND pk=?",
            (target, table, pk),
        ).fetchone()
        if row is not None and not outranks(e, Entry(row[0], row[1], row[2])):
            return
        self.db.execute(
            "INSERT OR REPLACE INTO hints VALUES (?,?,?,?,?,?,?)",
            (target, table, pk, partition, e.timestamp, e.writer, e.value),
        )

    async def add_block(self, target: str, h: str, data: bytes) -> None:
        await self.local.blocks.write(h, data)
        self.db.execute(
            "INSERT OR REPLACE INTO hints VALUES (?,?,?,?,?,?,?)",
            (target, BLOCK, h, 0, 0, "", None),
        )

    def pending(self, limit: int = 500) -> list[Hint]:
        rows = self.db.execute(
            "SELECT target, tbl, pk, part, ts, writer, value FROM hints ORDER BY target, tbl, pk"
            " LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Hint(t, tbl, pk, part, None if tbl == BLOCK else Entry(ts, w, v))
            for t, tbl, pk, part, ts, w, v in rows
        ]

    def forget(self, hint: Hint) -> None:
        """Drop a delivered hint, unless a newer one for the same row arrived meanwhile."""
        if hint.entry is None:
            self.db.execute(
                "DELETE FROM hints WHERE target=? AND tbl=? AND pk=?",
                (hint.target, hint.table, hint.pk),
            )
            if self.local.blocks.refcount(hint.pk) == 0 and not self._block_hinted(hint.pk):
                self.local.blocks.path(hint.pk).unlink(missing_ok=True)
            return
        self.db.execute(
            "DELETE FROM hints WHERE target=? AND tbl=? AND pk=? AND ts=? AND writer=?",
            (hint.target, hint.table, hint.pk, hint.entry.timestamp, hint.entry.writer),
        )

    def _block_hinted(self, h: str) -> bool:
        row = self.db.execute("SELECT 1 FROM hints WHERE tbl=? AND pk=?", (BLOCK, h)).fetchone()
        return row is not None

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM hints").fetchone()[0])


class Handoff:
    """Delivers this node's hints to their owners."""

    def __init__(
        self, hints: HintStore, peers: dict[str, Peer], clock: Clock, *, interval: float = 5.0
    ) -> None:
        self.hints = hints
        self.peers = peers
        self.clock = clock
        self.interval = interval

    async def deliver_once(self) -> int:
        """Hand every pending hint to its owner if it answers; returns how many went."""
        delivered = 0
        down: set[str] = set()
        for hint in self.hints.pending():
            peer = self.peers.get(hint.target)
            if peer is None or hint.target in down:
                continue
            try:
                if hint.entry is None:
                    data = await self.hints.local.blocks.read(hint.pk)
                    await peer.put_block(hint.pk, data)
                else:
                    await peer.merge(hint.table, [(hint.pk, hint.partition, hint.entry)])
            except PeerError as e:
                log.info("handoff to %s deferred: %s", hint.target, e)
                down.add(hint.target)
                continue
            self.hints.forget(hint)
            delivered += 1
        return delivered

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_once()
            except DiskFull as e:
                self.hints.local.disk_full(e)
            except Exception:
                log.exception("hinted handoff round failed; retrying in %.0f s", self.interval)
            await self.clock.sleep(self.interval)
