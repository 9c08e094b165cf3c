"""The metadata database's rows in memory: ``entry`` answers what SQLite holds, whatever
the sequence of merges, tombstone collections, rolled-back transactions and evictions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloudless.objectstore import metadb
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.metadb import MetaDb

TABLES = ("objects", "block_refs")
PKS = [f"b/k{i}" for i in range(6)]


def _sqlite(meta: MetaDb, table: str, pk: str) -> Entry | None:
    row = meta.db.execute(f"SELECT ts, writer, value FROM {table} WHERE pk = ?", (pk,)).fetchone()
    return None if row is None else Entry(*row)


class Boom(Exception):
    pass


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("merge"),
            st.sampled_from(TABLES),
            st.sampled_from(PKS),
            st.integers(1, 30),
            st.sampled_from(["n1", "n2"]),
            st.one_of(st.none(), st.binary(min_size=1, max_size=300)),
        ),
        st.tuples(st.just("rolled_back"), st.sampled_from(TABLES), st.sampled_from(PKS)),
        st.tuples(st.just("collect"), st.sampled_from(TABLES), st.integers(1, 40)),
        st.tuples(st.just("read"), st.sampled_from(TABLES), st.sampled_from(PKS)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, budget=st.sampled_from([0, 700, 1 << 20]))
@example(  # a tombstone read (so held in memory), then collected
    [("merge", "objects", "b/k0", 1, "n1", None), ("collect", "objects", 40)], 1 << 20
)
def test_entry_is_what_sqlite_holds(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple], budget: int
) -> None:
    # budget 0: every row evicted at once; 700: a few kept
    meta = MetaDb(tmp_path_factory.mktemp("rows") / "m.db", "n1", row_cache_bytes=budget)
    try:
        for op in ops:
            t = meta.table(op[1])
            if op[0] == "merge":
                _, _, pk, ts, writer, value = op
                t.apply(pk, 0, Entry(ts, writer, value))
            elif op[0] == "rolled_back":
                pk = op[2]
                with pytest.raises(Boom), meta.transaction():
                    t.apply_in_transaction(pk, 0, Entry(10_000, "n9", b"never committed"))
                    raise Boom
            elif op[0] == "collect":
                t.collect_tombstones(op[2], set(PKS))
            else:
                t.entry(op[2])
            for table in TABLES:
                for pk in PKS:
                    assert meta.table(table).entry(pk) == _sqlite(meta, table, pk)
        assert meta._row_bytes <= max(budget, 0) or not meta._rows
        assert meta._row_bytes == sum(metadb._row_cost(pk, e) for (_, pk), e in meta._rows.items())
    finally:
        meta.close()


def test_a_failed_commit_forgets_what_the_transaction_wrote(tmp_path: Path) -> None:
    meta = MetaDb(tmp_path / "m.db", "n1")
    t = meta.table("objects")
    t.apply("b/k", 0, Entry(1, "n1", b"old"))

    class FailingCommit:
        def __init__(self, db: object) -> None:
            self.db = db

        def execute(self, sql: str, *args: object) -> object:
            if sql == "COMMIT":
                raise OSError("disk full")
            return self.db.execute(sql, *args)  # type: ignore[attr-defined]

        @property
        def in_transaction(self) -> bool:
            return bool(self.db.in_transaction)  # type: ignore[attr-defined]

    real = meta.db
    meta.db = t.db = FailingCommit(real)  # type: ignore[assignment]
    with pytest.raises(OSError, match="disk full"):
        t.apply("b/k", 0, Entry(2, "n1", b"new"))
    meta.db = t.db = real
    assert not real.in_transaction  # rolled back, not left open for the next BEGIN to fail
    assert t.entry("b/k") == Entry(1, "n1", b"old")
    meta.close()
