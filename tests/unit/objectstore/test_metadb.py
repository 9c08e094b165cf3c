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
