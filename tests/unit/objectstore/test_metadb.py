"""The metadata database's WAL checkpoints: SQLite's own on commit by default; with
``checkpoint_in_background`` none on commit, and ``checkpoint`` (run from a thread by the
storage service) copies the WAL into the database file."""

from __future__ import annotations

import threading
from pathlib import Path

from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.metadb import MetaDb


def _fill(meta: MetaDb, n: int) -> None:
    t = meta.table("objects")
    for i in range(n):  # ~8 WAL pages a commit: past SQLite's 1,000-page checkpoint mark
        t.apply(f"b/k{i:05}", i % 4, Entry(1000 + i, "n1", b"v" * 200))


def test_without_checkpoints_on_commit_the_wal_holds_the_writes_until_checkpoint(
    tmp_path: Path,
) -> None:
    auto = MetaDb(tmp_path / "auto.db", "n1")
    _fill(auto, 400)
    moved_on_commit = (tmp_path / "auto.db").stat().st_size
    auto.close()

    meta = MetaDb(tmp_path / "m.db", "n1", checkpoint_in_background=True)
    db = tmp_path / "m.db"
    _fill(meta, 400)
    before = db.stat().st_size
    assert before < moved_on_commit  # nothing was copied into the file by a commit
    done = threading.Thread(target=meta.checkpoint)  # as the service runs it: off the loop
    done.start()
    done.join()
    assert db.stat().st_size >= moved_on_commit
    meta.close()
    meta.checkpoint()  # after close: nothing to do, no error

    again = MetaDb(db, "n1")
    assert again.table("objects").entry("b/k00399") == Entry(1399, "n1", b"v" * 200)
    again.close()


# (stored value, what a range with heads=True answers)
HEADS = [
    (b'{"v":"a"}\0body bytes', b'{"v":"a"}'),
    (b'{"v":"a"}\0', b'{"v":"a"}'),  # an empty body
    (b'{"v":"a"}\0with\0nuls', b'{"v":"a"}'),  # the first NUL cuts
    (b'{"v":"no body"}', b'{"v":"no body"}'),
    (b"1", b"1"),  # another table's value
    (None, None),  # a tombstone
]


def test_a_range_of_heads_reads_each_value_cut_at_its_body(tmp_path: Path) -> None:
    t = MetaDb(tmp_path / "m.db", "n1").table("objects")
    for i, (value, _) in enumerate(HEADS):
        t.merge(f"b/{i}", 0, Entry(5, "n1", value))
    assert [e.value for _, e in t.range("b/", heads=True)] == [want for _, want in HEADS]
    assert [e.value for _, e in t.range("b/")] == [value for value, _ in HEADS]
    t.merge("b/0", 0, Entry(6, "n1", b'{"v":"b"}'))  # an overwrite without a body clears it
    assert t.range("b/0", limit=1, heads=True)[0][1].value == b'{"v":"b"}'
    t.meta.close()


def test_a_table_from_before_the_head_column_gets_it_filled_on_open(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    db.execute(
        "CREATE TABLE objects (pk TEXT PRIMARY KEY, part INTEGER NOT NULL, ts INTEGER NOT NULL,"
        " writer TEXT NOT NULL, value BLOB, kh INTEGER NOT NULL)"
    )
    for i, (value, _) in enumerate(HEADS):
        db.execute("INSERT INTO objects VALUES (?, 0, 5, 'n1', ?, 0)", (f"b/{i}", value))
    db.commit()
    db.close()
    t = MetaDb(tmp_path / "old.db", "n1").table("objects")
    assert [e.value for _, e in t.range("b/", heads=True)] == [want for _, want in HEADS]
    assert [e.value for _, e in t.range("b/")] == [value for value, _ in HEADS]
    t.meta.close()
