"""What a metadata commit superseded and whether it lost, from the replicas' (before, after)
answers (``seams.Commit``): a table with the reasoning beside each case."""

from __future__ import annotations

from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.seams import Commit

OLD = Entry(100, "n1", b"old")
MID = Entry(150, "n2", b"mid")
MINE = Entry(200, "n1", b"mine")
LATER = Entry(300, "n3", b"later")
GONE = Entry(120, "n2", None)  # a tombstone: nothing to release

CASES: list[tuple[Entry | None, list[tuple[Entry | None, Entry]], bool, list[Entry]]] = [
    # (prev read, replies (before, after), lost, superseded)
    (None, [(None, MINE), (None, MINE)], False, []),  # a new key
    (OLD, [(OLD, MINE), (OLD, MINE)], False, [OLD]),  # a plain overwrite
    (OLD, [(MID, MINE), (OLD, MINE)], False, [OLD, MID]),  # MID landed after our read
    (None, [(MID, MINE), (None, MINE)], False, [MID]),  # our read missed MID: a replica had it
    (OLD, [(LATER, LATER), (OLD, MINE)], True, [OLD]),  # LATER won; OLD still replaced
    (OLD, [(GONE, MINE), (OLD, MINE)], False, [OLD]),  # tombstones release nothing
    (MINE, [(MINE, MINE)], False, []),  # a retried write: nothing replaced
]


def test_commit_table() -> None:
    for prev, replies, lost, superseded in CASES:
        c = Commit(MINE, prev, tuple(replies))
        assert c.lost == lost, (prev, replies)
        assert c.superseded() == superseded, (prev, replies)
        assert c.winner == (LATER if lost else MINE)
