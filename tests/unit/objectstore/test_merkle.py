"""Per-partition hash trees: kept equal to a rebuild under any changes, the pure walk
decisions as tables, and two replicas with random divergent contents converging through
``treesync`` while moving bytes bounded by their difference, not by the partition."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.lib.clock import FakeClock
from cloudless.objectstore import merkle, treesync
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.merkle import DEPTH, FANOUT, LIST_MAX, plan, wanted
from cloudless.objectstore.metadb import MetaDb

TABLE = "objects"
H1, H2 = b"\x01" * 16, b"\x02" * 16

PLANS = [
    # (ours, theirs, descend, listed)
    ({}, {}, [], []),  # nothing on either side
    ({(0, 0): (H1, 500)}, {(0, 0): (H1, 500)}, [], []),  # equal roots: nothing
    ({(0, 0): (H1, 500)}, {(0, 0): (H2, 500)}, [(0, 0)], []),  # 500 > LIST_MAX rows: descend
    ({(0, 0): (H1, 500)}, {(0, 0): (H2, 32)}, [], [(0, 0)]),  # 32 <= LIST_MAX: list them
    ({}, {(1, 3): (H2, 40)}, [(1, 3)], []),  # we lack the node: descend (40 rows)
    ({(1, 3): (H1, 40)}, {}, [], []),  # only we hold it: nothing to pull
    ({(3, 7): (H1, 900)}, {(3, 7): (H2, 900)}, [], [(3, 7)]),  # a leaf (level 3) is listed
    (
        {(1, 1): (H1, 99), (1, 2): (H1, 99)},
        {(1, 1): (H1, 99), (1, 2): (H2, 99), (1, 9): (H2, 5)},
        [(1, 2)],  # differs, 99 rows
        [(1, 9)],  # only theirs, 5 rows
    ),
]


def test_plan_table() -> None:
    for ours, theirs, descend, listed in PLANS:
        assert plan(ours, theirs) == (descend, listed), (ours, theirs)


WANTED = [
    # (ours, theirs, pulled)
    ([], [("a", 5, "n1", "h")], ["a"]),  # we lack it
    ([("a", 5, "n1", "h")], [("a", 5, "n1", "h")], []),  # same state
    ([("a", 5, "n1", "h")], [("a", 6, "n1", "x")], ["a"]),  # theirs is later (6 > 5)
    ([("a", 6, "n1", "x")], [("a", 5, "n1", "h")], []),  # ours is later: they pull it
    ([("a", 5, "n1", "h")], [("a", 5, "n2", "x")], ["a"]),  # same ts, writer n2 > n1
    ([("a", 5, "n1", "h")], [("a", 5, "n1", "x")], ["a"]),  # same stamp, other state
    ([("a", 5, "n1", "h"), ("b", 1, "n1", "h")], [("b", 2, "n1", "h")], ["b"]),
]


def test_wanted_table() -> None:
    for ours, theirs, pulled in WANTED:
        assert wanted(ours, theirs) == pulled, (ours, theirs)


def test_path_and_span_agree() -> None:
    kh = 0xABCDEF12
    # root, then 4 more bits per level: 0xA, 0xAB, 0xABC
    assert merkle.path(kh) == [(0, 0), (1, 0xA), (2, 0xAB), (3, 0xABC)]
    for node in merkle.path(kh):
        lo, hi = merkle.span(node)
        assert lo <= kh < hi
    assert merkle.span((3, 0xABC)) == (0xABC00000, 0xABD00000)


def _stored(meta: MetaDb) -> list[tuple[object, ...]]:
    return sorted(meta.db.execute("SELECT tbl, part, level, idx, hash, count FROM merkle"))


def _part(pk: str) -> int:
    return int(pk[1:]) % 3  # a row's partition is a function of its key


entries = st.builds(
    Entry,
    timestamp=st.integers(0, 6),
    writer=st.sampled_from(["n1", "n2"]),
    value=st.one_of(st.none(), st.binary(max_size=4)),
)
changes = st.lists(
    st.tuples(
        st.sampled_from(["merge", "merge", "forget", "collect"]),
        st.sampled_from([f"k{i}" for i in range(12)]),
        entries,
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(changes)
def test_the_tree_kept_on_every_change_equals_a_rebuild(
    log: list[tuple[str, str, Entry]],
) -> None:
    meta = MetaDb(":memory:", "n1")
    t = meta.table(TABLE)
    for op, pk, e in log:
        cur = t.entry(pk)
        if op == "merge":
            t.merge(pk, _part(pk), e)
        elif op == "forget" and cur is not None:
            t.forget(pk, cur)  # drops it only if it is a tombstone
        elif op == "collect":
            t.collect_tombstones(e.timestamp, {pk})
    kept = _stored(meta)
    meta.rebuild_trees(TABLE)
    assert _stored(meta) == kept
    rows = meta.db.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    roots = meta.tree.roots(TABLE)
    assert sum(c for _, c in roots.values()) == rows


def test_a_table_from_before_the_trees_gets_them_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    import sqlite3

    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TABLE objects (pk TEXT PRIMARY KEY, part INTEGER NOT NULL, ts INTEGER NOT NULL,"
        " writer TEXT NOT NULL, value BLOB)"
    )
    raw.executemany(
        "INSERT INTO objects VALUES (?, ?, ?, ?, ?)",
        [(f"k{i}", _part(f"k{i}"), i, "n1", b"v") for i in range(50)],
    )
    raw.commit()
    raw.close()
    meta = MetaDb(db, "n1")
    t = meta.table(TABLE)
    assert sum(c for _, c in meta.tree.roots(TABLE).values()) == 50
    t.merge("k3", _part("k3"), Entry(99, "n1", None))
    kept = _stored(meta)
    meta.rebuild_trees(TABLE)
    assert _stored(meta) == kept
    meta.close()


# ---- two replicas ------------------------------------------------------------------------

NODE_JSON = 64
"""Bytes of one node summary on the wire, at most: [3, 4095, "<32 hex>", 100000], """
ITEM_JSON = 80
"""One listed item, pks of up to 9 characters: ["k12345678", 1000000, "n2", "<32 hex>"], """
CALL = 120
"""A call's own request and answer wrapping (table, partition, keys)."""
PER_ROW = DEPTH * (FANOUT * NODE_JSON + CALL) + LIST_MAX * ITEM_JSON + CALL + 120
"""What one differing row can cost one direction, at most: the children of every node on
its path (3 * (16 * 64 + 120) = 3,432), one listing of a node of at most 32 rows on the
peer's side (32 * 80 + 120 = 2,680) and the row itself (120): 6,232 bytes."""
ROOTS = 400
"""The roots call of two partitions of one table."""


def _store(tmp: Path, name: str) -> LocalStore:
    meta = MetaDb(":memory:", name)
    return LocalStore(meta, BlockStore(tmp / name, meta), FakeClock())


async def _pull(dst: LocalStore, src: LocalStore, parts: list[int]) -> None:
    """One direction of anti-entropy, with the functions ``AntiEntropy.compare`` uses."""
    peer = treesync.LocalPeer("src", src)
    for table, p, root in await treesync.differing(peer, dst, [TABLE], parts):
        for pk, e in await treesync.fetch(peer, dst, table, p, root):
            dst.merge(table, pk, p, e)


def _rows(s: LocalStore) -> list[tuple[str, Entry]]:
    return s.raw(TABLE).range("", limit=1 << 30)


def _listing_bytes(s: LocalStore) -> int:
    """What the whole listing of the table would weigh (the one-level digest's pull)."""
    return len(json.dumps([[pk, e.timestamp, e.writer, None] for pk, e in _rows(s)]))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    st.integers(100, 3000),
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 3100), st.booleans()), max_size=30),
    st.integers(0, 2**32),
)
def test_divergent_replicas_converge_moving_bytes_bounded_by_the_difference(
    base: int, diverge: list[tuple[str, int, bool]], seed: int
) -> None:
    import tempfile

    rnd = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = _store(Path(tmp), "a"), _store(Path(tmp), "b")
        for i in range(base):
            pk, e = f"k{i:08d}", Entry(rnd.randrange(1, 9), "n1", rnd.randbytes(8))
            for s in (a, b):
                s.merge(TABLE, pk, i % 2, e)
        touched: set[str] = set()
        for n, (side, i, delete) in enumerate(diverge):
            pk = f"k{i:08d}"
            e = Entry(10 + n, "n2", None if delete else rnd.randbytes(8))
            (a if side == "a" else b).merge(TABLE, pk, i % 2, e)
            touched.add(pk)
        meter = treesync.Meter()
        token = treesync.METER.set(meter)
        try:
            asyncio.run(_pull(a, b, [0, 1]))
            asyncio.run(_pull(b, a, [0, 1]))
        finally:
            treesync.METER.reset(token)
        assert _rows(a) == _rows(b)
        assert a.meta.tree.roots(TABLE) == b.meta.tree.roots(TABLE)
        d = len(touched)
        # each direction: one roots call, then at most PER_ROW per differing row
        assert meter.total <= 2 * (ROOTS + d * PER_ROW), (meter.total, d)
        if d == 0:
            assert meter.total <= 2 * ROOTS


def test_one_differing_row_moves_a_sliver_of_the_partition(tmp_path: Path) -> None:
    a, b = _store(tmp_path, "a"), _store(tmp_path, "b")
    for i in range(5000):
        e = Entry(1, "n1", b"value")
        a.merge(TABLE, f"k{i:08d}", 0, e)
        b.merge(TABLE, f"k{i:08d}", 0, e)
    b.merge(TABLE, "k00001234", 0, Entry(2, "n2", b"newer"))
    meter = treesync.Meter()
    token = treesync.METER.set(meter)
    try:
        asyncio.run(_pull(a, b, [0]))
    finally:
        treesync.METER.reset(token)
    assert a.raw(TABLE).entry("k00001234") == Entry(2, "n2", b"newer")
    assert _rows(a) == _rows(b)
    # 5,000 rows: a listing of ~190 KB; the walk moves the roots, three levels of at most
    # 16 children and one leaf's few items: a few KB
    assert meter.total <= ROOTS + PER_ROW
    assert meter.total * 30 < _listing_bytes(a), (meter.total, _listing_bytes(a))
