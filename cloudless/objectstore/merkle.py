"""Per-partition hash trees over the metadata tables (Garage's Merkle anti-entropy), kept in
the node's SQLite file and changed in the same transaction as the row they cover.

Shape: a row's *key hash* is the first 32 bits of blake3(pk). Level 0 is a (table,
partition)'s root; a node at ``level`` with index ``idx`` covers the rows whose key hash
starts with ``idx``'s ``level * BITS`` bits; leaves are at ``DEPTH`` (4096 per partition).
A node holds ``count``, the rows under it, and ``hash``, the XOR of those rows' item hashes
(blake3 of pk, timestamp, writer and value), as in Cassandra's repair trees: a row change
updates the ``DEPTH + 1`` nodes above it without reading any sibling. Empty nodes are not
stored. Equal hashes mean equal rows below (a false match has probability 2^-256).

Contracts:

* after any sequence of row changes (``change``) the stored tree equals ``rebuild`` over the
  rows;
* ``plan`` and ``wanted`` are pure: given both sides' summaries, which of the peer's nodes to
  descend into or list, and which of its rows this node lacks or holds an older state of.
  Walking down from the roots that differ, two replicas exchange a few node summaries per
  differing row instead of the partition's whole listing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping

import blake3

from cloudless.objectstore.crdt import Entry

BITS = 4
FANOUT = 1 << BITS
DEPTH = 3
LIST_MAX = 32
"""A differing node with at most this many rows on the peer's side is listed, not descended."""
ZERO = bytes(32)

Node = tuple[int, int]
"""(level, index)."""
Summary = tuple[bytes, int]
"""(hash prefix, row count) of a node: the first ``SUMMARY_BYTES`` of its hash."""
SUMMARY_BYTES = 16
Item = tuple[str, int, str, str]
"""(pk, timestamp, writer, item hash prefix in hex) of a row, as listed for a comparison."""


def key_hash(pk: str) -> int:
    return int.from_bytes(blake3.blake3(pk.encode()).digest()[:4], "big")


def item_hash(pk: str, e: Entry) -> bytes:
    h = blake3.blake3(f"{len(pk)}:{pk}:{e.timestamp}:{len(e.writer)}:{e.writer}:".encode())
    h.update(b"-" if e.value is None else b"+" + blake3.blake3(e.value).digest())
    return h.digest()


def item(pk: str, e: Entry) -> Item:
    return (pk, e.timestamp, e.writer, item_hash(pk, e)[:16].hex())


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def path(kh: int) -> list[Node]:
    """The nodes above a row with key hash ``kh``, root first."""
    return [(level, kh >> (32 - BITS * level)) for level in range(DEPTH + 1)]


def span(node: Node) -> tuple[int, int]:
    """The key hashes ``[lo, hi)`` a node covers."""
    level, idx = node
    shift = 32 - BITS * level
    return idx << shift, (idx + 1) << shift


def children_of(node: Node) -> tuple[int, int, int]:
    """(level, first index, last index + 1) of a node's children."""
    level, idx = node
    return level + 1, idx * FANOUT, (idx + 1) * FANOUT


# ---- pure decisions ------------------------------------------------------------------------


def plan(
    mine: Mapping[Node, Summary], theirs: Mapping[Node, Summary]
) -> tuple[list[Node], list[Node]]:
    """Of the peer's nodes, those to descend into and those to list: every node whose
    summary differs from ours, listed when it is a leaf or holds at most ``LIST_MAX`` rows
    on the peer's side. A node only this side has holds nothing to pull."""
    descend: list[Node] = []
    listed: list[Node] = []
    for node, s in sorted(theirs.items()):
        if mine.get(node) == s:
            continue
        if node[0] >= DEPTH or s[1] <= LIST_MAX:
            listed.append(node)
        else:
            descend.append(node)
    return descend, listed


def wanted(mine: Iterable[Item], theirs: Iterable[Item]) -> list[str]:
    """The peer's rows to pull: those this side lacks, holds an older state of, or holds a
    different state of at the same (timestamp, writer) (the merge decides)."""
    have = {pk: (ts, w, h) for pk, ts, w, h in mine}
    out = []
    for pk, ts, w, h in theirs:
        cur = have.get(pk)
        if cur is None or (ts, w) > cur[:2] or ((ts, w) == cur[:2] and h != cur[2]):
            out.append(pk)
    return out


# ---- the stored tree -----------------------------------------------------------------------


class Tree:
    """The trees of every table in one SQLite connection. ``change`` runs inside the
    caller's transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.create_function("merkle_xor", 2, _xor, deterministic=True)
        db.execute(
            "CREATE TABLE IF NOT EXISTS merkle (tbl TEXT NOT NULL, part INTEGER NOT NULL,"
            " level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
            " count INTEGER NOT NULL, PRIMARY KEY (tbl, part, level, idx)) WITHOUT ROWID"
        )

    def change(
        self,
        table: str,
        part: int,
        pk: str,
        before: Entry | None,
        after: Entry | None,
        *,
        kh: int | None = None,
    ) -> None:
        """Row ``pk`` of ``table`` went from ``before`` to ``after`` (None: absent);
        ``kh``: ``key_hash(pk)`` if the caller has it."""
        if before == after:
            return
        delta = _xor(
            ZERO if before is None else item_hash(pk, before),
            ZERO if after is None else item_hash(pk, after),
        )
        dc = (after is not None) - (before is not None)
        self._shift(table, part, path(key_hash(pk) if kh is None else kh), delta, dc)

    def resync_leaf(
        self, table: str, part: int, kh: int, rows: Iterable[tuple[str, Entry]]
    ) -> None:
        """Make the nodes above key hash ``kh`` agree with ``rows``, all the rows under its
        leaf as stored now: for a row whose stored value changed without ``change`` (damaged
        on disk), so that what the tree held for it is unknown."""
        nodes = path(kh)
        h, n = ZERO, 0
        for pk, e in rows:
            h, n = _xor(h, item_hash(pk, e)), n + 1
        level, idx = nodes[-1]
        row = self.db.execute(
            "SELECT hash, count FROM merkle WHERE tbl = ? AND part = ? AND level = ? AND idx = ?",
            (table, part, level, idx),
        ).fetchone()
        held, count = (ZERO, 0) if row is None else (row[0], row[1])
        if (held, count) != (h, n):
            self._shift(table, part, nodes, _xor(held, h), n - count)

    def _shift(self, table: str, part: int, nodes: list[Node], delta: bytes, dc: int) -> None:
        """XOR ``delta`` into ``nodes`` and add ``dc`` to their counts."""
        # one point upsert per node (no read first): a node the row is new under starts at
        # (delta, 1); a node whose count falls to 0 is then deleted (empty nodes are not kept)
        self.db.executemany(
            "INSERT INTO merkle(tbl, part, level, idx, hash, count) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(tbl, part, level, idx) DO UPDATE SET"
            " hash = merkle_xor(hash, excluded.hash), count = count + excluded.count",
            [(table, part, level, idx, delta, dc) for level, idx in nodes],
        )
        if dc < 0:
            self.db.executemany(
                "DELETE FROM merkle WHERE tbl = ? AND part = ? AND level = ? AND idx = ?"
                " AND count = 0",
                [(table, part, level, idx) for level, idx in nodes],
            )

    def rebuild(self, table: str, rows: Iterable[tuple[str, int, Entry]]) -> None:
        """Recompute ``table``'s trees from all its rows ``(pk, partition, entry)``."""
        hashes: dict[tuple[int, int, int], int] = {}
        counts: dict[tuple[int, int, int], int] = {}
        for pk, part, e in rows:
            ih = int.from_bytes(item_hash(pk, e), "big")
            for level, idx in path(key_hash(pk)):
                k = (part, level, idx)
                hashes[k] = hashes.get(k, 0) ^ ih
                counts[k] = counts.get(k, 0) + 1
        self.db.execute("DELETE FROM merkle WHERE tbl = ?", (table,))
        self.db.executemany(
            "INSERT INTO merkle(tbl, part, level, idx, hash, count) VALUES (?,?,?,?,?,?)",
            [(table, *k, h.to_bytes(32, "big"), counts[k]) for k, h in hashes.items()],
        )

    def roots(self, table: str) -> dict[int, Summary]:
        """Every non-empty partition's root summary."""
        return {
            p: (h[:SUMMARY_BYTES], c)
            for p, h, c in self.db.execute(
                "SELECT part, hash, count FROM merkle WHERE tbl = ? AND level = 0", (table,)
            )
        }

    def nodes(self, table: str, part: int, wanted: Iterable[Node]) -> dict[Node, Summary]:
        """The stored summaries of ``wanted`` (absent ones are empty)."""
        out: dict[Node, Summary] = {}
        for level, idx in wanted:
            row = self.db.execute(
                "SELECT hash, count FROM merkle WHERE tbl = ? AND part = ? AND level = ?"
                " AND idx = ?",
                (table, part, level, idx),
            ).fetchone()
            if row is not None:
                out[(level, idx)] = (row[0][:SUMMARY_BYTES], row[1])
        return out

    def children(self, table: str, part: int, parents: Iterable[Node]) -> dict[Node, Summary]:
        """The non-empty children of ``parents``."""
        out: dict[Node, Summary] = {}
        for node in parents:
            level, lo, hi = children_of(node)
            for idx, h, c in self.db.execute(
                "SELECT idx, hash, count FROM merkle WHERE tbl = ? AND part = ? AND level = ?"
                " AND idx >= ? AND idx < ?",
                (table, part, level, lo, hi),
            ):
                out[(level, idx)] = (h[:SUMMARY_BYTES], c)
        return out
