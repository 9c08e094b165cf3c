"""The node-local metadata database: LWW tables (``crdt.py``) in one SQLite file (WAL).

Each table row is ``(pk, partition, timestamp, writer, value)``; ``pk`` orders rows (UTF-8
byte order, which is S3's listing order) and ``partition`` groups them for replication and
anti-entropy. Every change goes through ``merge``, locally stamped writes included, so a row's
state depends only on the set of entries it has seen. Every change (merge, forget, tombstone
collection) updates the partition's hash tree (``merkle.py``) in the same transaction.

Calls are synchronous and short (one row or one indexed range); callers on an event loop keep
batches small. The file is opened with ``journal_mode=WAL`` and ``synchronous=NORMAL``: a
committed merge survives a process crash; an OS crash may lose the last transactions, which
replication and anti-entropy repair. The WAL is checkpointed by SQLite on commit, or, for an
owner that opts in, by ``checkpoint`` on a thread.

The rows last read or written are kept in memory (``ROW_CACHE_BYTES``) and ``entry`` answers
from there: every change of a row goes through this object on its one connection (merge,
tombstone collection), which updates the copy; a rolled-back transaction empties it. Nothing
else may write the tables (no second writer process or connection).
"""

from __future__ import annotations

import contextlib
import errno
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cloudless.objectstore.crdt import Entry, merge, next_timestamp, same_write
from cloudless.objectstore.merkle import Node, Tree, key_hash, span
from cloudless.objectstore.merkle import path as tree_path
from cloudless.objectstore.records import BODY

_TABLE = re.compile(r"^[a-z_]{1,32}$")


def head_of(value: bytes | None) -> bytes | None:
    """What the ``head`` column keeps of a value: its bytes before the first NUL (an object
    record's JSON head, ``records.BODY``), so a listing reads no inline body; None for a value
    with no body (the listing reads the value itself)."""
    if value is None:
        return None
    cut = value.find(BODY)
    return None if cut < 0 else value[:cut]


class _Connection(sqlite3.Connection):
    """Every statement's ``SQLITE_FULL`` raised as ``DiskFull`` (autocommit writes too: block
    GC's queue, hints), so callers handle one error for a full disk."""

    node = ""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as e:
            if full(e):
                raise DiskFull(self.node, "metadata") from e
            raise

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as e:
            if full(e):
                raise DiskFull(self.node, "metadata") from e
            raise


class DiskFull(OSError):
    """This node's disk has no room for a write: ``ENOSPC`` from a block file or
    ``SQLITE_FULL`` from the metadata (the write rolled back whole). A replicated write counts
    it as this replica failing (``Cluster.each``: an ``OSError``); reads go on."""

    def __init__(self, node: str, what: str) -> None:
        super().__init__(errno.ENOSPC, f"{node}: no space left on device for {what}")

    def __str__(self) -> str:
        return str(self.strerror)


def full(e: BaseException) -> bool:
    """Whether ``e`` says the disk is full (SQLite's ``SQLITE_FULL`` or ``ENOSPC``)."""
    if isinstance(e, sqlite3.Error):
        return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


ROW_CACHE_BYTES = 8 << 20
"""What the rows ``entry`` keeps in memory may take by default: their values' and keys'
bytes, plus ``_ROW_OVERHEAD`` each."""
_ROW_OVERHEAD = 200


class MetaDb:
    def __init__(
        self,
        path: Path | str,
        writer: str,
        *,
        checkpoint_in_background: bool = False,
        row_cache_bytes: int | None = None,
    ) -> None:
        """``checkpoint_in_background``: no WAL checkpoint on commit; the owner calls
        ``checkpoint`` (from a thread) every so often instead, so the checkpoint's fsyncs
        never stall the event loop that commits (SQLite's automatic checkpoint runs inside
        the commit that crosses 1,000 WAL pages: 5-30 ms on this disk, ~2% of commits)."""
        self.writer = writer
        self.path = str(path)
        self.db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, factory=_Connection
        )
        self.db.node = writer
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        if checkpoint_in_background:
            self.db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing = threading.Lock()
        self._closed = False
        self.tree = Tree(self.db)
        self._tables: set[str] = set()
        self._rows: dict[tuple[str, str], Entry] = {}
        """(table, pk) -> the row as committed or as this connection's open transaction
        holds it, least recently used first."""
        self._row_bytes = 0
        self.row_cache_bytes = ROW_CACHE_BYTES if row_cache_bytes is None else row_cache_bytes
        """What the rows held in memory may take (``ROW_CACHE_BYTES`` by default)."""

    def cached(self, table: str, pk: str) -> Entry | None:
        """Row ``pk`` of ``table`` if it is in memory (None: not known here, ask SQLite)."""
        e = self._rows.pop((table, pk), None)
        if e is not None:
            self._rows[table, pk] = e  # most recently used now
        return e

    def remember(self, table: str, pk: str, e: Entry) -> None:
        self.forget(table, pk)
        self._rows[table, pk] = e
        self._row_bytes += _row_cost(pk, e)
        while self._row_bytes > self.row_cache_bytes:
            oldest, gone = next(iter(self._rows.items()))
            del self._rows[oldest]
            self._row_bytes -= _row_cost(oldest[1], gone)

    def forget(self, table: str, pk: str) -> None:
        old = self._rows.pop((table, pk), None)
        if old is not None:
            self._row_bytes -= _row_cost(pk, old)

    def _forget_all(self) -> None:
        """After a rollback: the copies may hold what was never committed."""
        self._rows.clear()
        self._row_bytes = 0

    def _commit(self) -> None:
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()  # SQLite may keep the transaction open after a failed COMMIT
            raise

    def _rollback(self) -> None:
        self._forget_all()
        if self.db.in_transaction:  # SQLite rolls some failures (a full disk) back itself
            self.db.execute("ROLLBACK")

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file and fsync it, on a
        connection of its own (``PASSIVE``: it neither waits for nor blocks the writer).
        Blocking: call it from a thread, one call at a time."""
        with self._checkpointing:
            if self._closed:
                return
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        with self._checkpointing:  # a checkpoint still running in its thread ends first
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.close()
        self.db.close()

    def table(self, name: str) -> LwwTable:
        if not _TABLE.match(name):
            raise ValueError(f"table name {name!r}: 1-32 lowercase letters or '_'")
        if name not in self._tables:
            self._create(name)
            self._tables.add(name)
        return LwwTable(self, name)

    def _create(self, name: str) -> None:
        """The table, its indexes and its hash trees; a table from before the trees gets its
        key-hash column and trees built once."""
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {name} (pk TEXT PRIMARY KEY, part INTEGER NOT NULL,"
            " ts INTEGER NOT NULL, writer TEXT NOT NULL, head BLOB, value BLOB,"
            " kh INTEGER NOT NULL)"
        )
        columns = [r[1] for r in self.db.execute(f"PRAGMA table_info({name})")]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if "head" not in columns:  # after the value: right, without the saving
                self.db.execute(f"ALTER TABLE {name} ADD COLUMN head BLOB")
                self.db.execute(
                    f"UPDATE {name} SET head = substr(value, 1, instr(value, ?) - 1)"
                    " WHERE instr(value, ?) > 0",
                    (BODY, BODY),
                )
            if "kh" not in columns:
                self.db.execute(f"ALTER TABLE {name} ADD COLUMN kh INTEGER NOT NULL DEFAULT 0")
                pks = [pk for (pk,) in self.db.execute(f"SELECT pk FROM {name}")]
                self.db.executemany(
                    f"UPDATE {name} SET kh = ? WHERE pk = ?", [(key_hash(pk), pk) for pk in pks]
                )
                rows = self.db.execute(f"SELECT pk, part, ts, writer, value FROM {name}")
                self.tree.rebuild(name, ((pk, p, Entry(t, w, v)) for pk, p, t, w, v in rows))
            self.db.execute(f"CREATE INDEX IF NOT EXISTS {name}_part ON {name}(part, pk)")
            self.db.execute(f"CREATE INDEX IF NOT EXISTS {name}_kh ON {name}(part, kh)")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back if the body
        or the commit raises, ``DiskFull`` included). Not re-entrant: the calls inside use the
        ``*_in_transaction`` forms."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def rebuild_trees(self, name: str) -> None:
        """Recompute ``name``'s hash trees from its rows (a check, or a repair)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute(f"SELECT pk, part, ts, writer, value FROM {name}")
            self.tree.rebuild(name, ((pk, p, Entry(t, w, v)) for pk, p, t, w, v in rows))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise


class LwwTable:
    """One LWW table. ``get`` hides tombstones; ``entry`` and ``entries`` show them."""

    def __init__(self, db: MetaDb, name: str) -> None:
        self.meta = db
        self.db = db.db
        self.name = name

    def entry(self, pk: str) -> Entry | None:
        e = self.meta.cached(self.name, pk)
        if e is not None:
            return e
        row = self.db.execute(
            f"SELECT ts, writer, value FROM {self.name} WHERE pk = ?", (pk,)
        ).fetchone()
        if row is None:
            return None
        e = Entry(row[0], row[1], row[2])
        self.meta.remember(self.name, pk, e)
        return e

    def get(self, pk: str) -> bytes | None:
        e = self.entry(pk)
        return None if e is None else e.value

    def merge(self, pk: str, partition: int, incoming: Entry) -> Entry:
        """Fold ``incoming`` into row ``pk``; returns the row's state after."""
        return self.apply(pk, partition, incoming)[1]

    def apply(self, pk: str, partition: int, incoming: Entry) -> tuple[Entry | None, Entry]:
        """Fold ``incoming`` into row ``pk``; returns the row's state before and after (the
        writer of ``incoming`` learns what it superseded, or that it lost)."""
        with self.meta.transaction():
            return self.apply_in_transaction(pk, partition, incoming)

    def apply_in_transaction(
        self, pk: str, partition: int, incoming: Entry
    ) -> tuple[Entry | None, Entry]:
        """``apply`` inside the caller's ``MetaDb.transaction`` (several rows, one commit)."""
        current = self.entry(pk)
        winner = merge(current, incoming)
        if winner is not current:
            kh = key_hash(pk)
            v = winner.value
            self.db.execute(
                f"INSERT INTO {self.name}(pk, part, ts, writer, head, value, kh)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(pk) DO UPDATE SET part=excluded.part,"
                " ts=excluded.ts, writer=excluded.writer, head=excluded.head,"
                " value=excluded.value",
                (pk, partition, winner.timestamp, winner.writer, head_of(v), v, kh),
            )
            if current is not None and same_write(current, winner):
                # one write, other bytes: the stored copy was damaged (``crdt.outranks``), so
                # what the tree held for it is unknown
                lo, hi = span(tree_path(kh)[-1])
                under = self.db.execute(
                    f"SELECT pk, ts, writer, value FROM {self.name} WHERE part = ? AND kh >= ?"
                    " AND kh < ?",
                    (partition, lo, hi),
                )
                self.meta.tree.resync_leaf(
                    self.name, partition, kh, ((k, Entry(t, w, v)) for k, t, w, v in under)
                )
            else:
                self.meta.tree.change(self.name, partition, pk, current, winner, kh=kh)
            self.meta.remember(self.name, pk, winner)
        return current, winner

    def stamp(self, pk: str, value: bytes | None, now_ms: int) -> Entry:
        """A local write's entry: this node as writer, ``max(now, previous + 1)``."""
        return Entry(next_timestamp(now_ms, self.entry(pk)), self.meta.writer, value)

    def put(self, pk: str, partition: int, value: bytes | None, now_ms: int) -> Entry:
        """Write locally (``None``: tombstone) and return the entry to replicate."""
        return self.merge(pk, partition, self.stamp(pk, value, now_ms))

    def range(
        self,
        start: str,
        *,
        prefix: str = "",
        limit: int = 1000,
        include_start: bool = True,
        heads: bool = False,
    ) -> list[tuple[str, Entry]]:
        """Rows with ``pk >= start`` (or ``>``) starting with ``prefix``, in order, tombstones
        included (callers skip them but must count them to page). ``heads``: each value cut
        at its body (``head_of``), read without the body's pages; for a listing only."""
        value = "coalesce(head, value)" if heads else "value"
        op = ">=" if include_start else ">"
        lo = start
        if prefix > start:
            op, lo = ">=", prefix
        upper = _successor(prefix)
        if upper is None:
            sql = (
                f"SELECT pk, ts, writer, {value} FROM {self.name} WHERE pk {op} ?"
                " ORDER BY pk LIMIT ?"
            )
            args: tuple[object, ...] = (lo, limit)
        else:
            sql = (
                f"SELECT pk, ts, writer, {value} FROM {self.name} WHERE pk {op} ? AND pk < ?"
                " ORDER BY pk LIMIT ?"
            )
            args = (lo, upper, limit)
        rows = self.db.execute(sql, args).fetchall()
        out = []
        for pk, ts, writer, value in rows:
            if not pk.startswith(prefix):
                break
            out.append((pk, Entry(ts, writer, value)))
        return out

    def entries(self, partition: int) -> Iterator[tuple[str, Entry]]:
        """Every row of ``partition`` in ``pk`` order (for anti-entropy and handoff)."""
        for pk, ts, writer, value in self.db.execute(
            f"SELECT pk, ts, writer, value FROM {self.name} WHERE part = ? ORDER BY pk",
            (partition,),
        ):
            yield pk, Entry(ts, writer, value)

    def page(self, partition: int, after: str, limit: int) -> list[tuple[str, Entry]]:
        """Rows of ``partition`` with ``pk > after``, in order, at most ``limit``."""
        rows = self.db.execute(
            f"SELECT pk, ts, writer, value FROM {self.name} WHERE part = ? AND pk > ?"
            " ORDER BY pk LIMIT ?",
            (partition, after, limit),
        ).fetchall()
        return [(pk, Entry(ts, w, v)) for pk, ts, w, v in rows]

    def under(self, partition: int, nodes: list[Node]) -> list[tuple[str, Entry]]:
        """The rows of ``partition`` under the hash-tree ``nodes``, in key-hash order."""
        out: list[tuple[str, Entry]] = []
        for node in nodes:
            lo, hi = span(node)
            out += [
                (pk, Entry(ts, w, v))
                for pk, ts, w, v in self.db.execute(
                    f"SELECT pk, ts, writer, value FROM {self.name} WHERE part = ? AND kh >= ?"
                    " AND kh < ? ORDER BY kh, pk",
                    (partition, lo, hi),
                )
            ]
        return out

    def rows(self, pks: list[str]) -> list[tuple[str, Entry]]:
        """The rows ``pks`` that exist, in the order asked."""
        out = []
        for pk in pks:
            e = self.entry(pk)
            if e is not None:
                out.append((pk, e))
        return out

    def tombstones(self, partition: int, older_than_ms: int, limit: int) -> list[tuple[str, Entry]]:
        """Tombstones of ``partition`` stamped before ``older_than_ms`` (candidates for GC)."""
        rows = self.db.execute(
            f"SELECT pk, ts, writer FROM {self.name} WHERE part = ? AND value IS NULL AND ts < ?"
            " ORDER BY pk LIMIT ?",
            (partition, older_than_ms, limit),
        ).fetchall()
        return [(pk, Entry(ts, w, None)) for pk, ts, w in rows]

    def forget(self, pk: str, tombstone: Entry) -> bool:
        """Drop row ``pk`` if it is exactly ``tombstone`` (a newer write is kept)."""
        return self._drop(pk, lambda e: e == tombstone and e.value is None)

    def collect_tombstones(self, older_than_ms: int, acknowledged: set[str]) -> int:
        """Drop tombstones stamped before ``older_than_ms`` whose deletion every replica has
        acknowledged (``acknowledged`` pks). Returns how many were dropped."""
        return sum(
            self._drop(pk, lambda e: e.value is None and e.timestamp < older_than_ms)
            for pk in sorted(acknowledged)
        )

    def _drop(self, pk: str, condition: Callable[[Entry], bool]) -> bool:
        with self.meta.transaction():
            row = self.db.execute(
                f"SELECT part, ts, writer, value FROM {self.name} WHERE pk = ?", (pk,)
            ).fetchone()
            gone = row is not None and condition(Entry(row[1], row[2], row[3]))
            if gone:
                self.db.execute(f"DELETE FROM {self.name} WHERE pk = ?", (pk,))
                self.meta.tree.change(self.name, row[0], pk, Entry(row[1], row[2], row[3]), None)
                self.meta.forget(self.name, pk)
        return gone


def _row_cost(pk: str, e: Entry) -> int:
    return len(pk) + (0 if e.value is None else len(e.value)) + _ROW_OVERHEAD


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no bound).
    Code point order is UTF-8 byte order, SQLite's BINARY collation."""
    if not prefix or prefix[-1] == "\U0010ffff":
        return None
    nxt = ord(prefix[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored; the next code point is U+E000
        nxt = 0xE000
    return prefix[:-1] + chr(nxt)
