"""LWW merges: commutative, associative, idempotent (values include object records with
inline bodies, whole and damaged); of two copies of one write, the intact one wins; the SQLite
tables converge, and a damaged stored copy mended by a merge leaves its hash tree right."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.objectstore.crdt import Entry, merge, next_timestamp, outranks
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.records import BODY, ObjectMeta, intact


def record(body: bytes, version: str = "v1") -> bytes:
    """An object record with ``body`` inline (its ETag the body's MD5)."""
    etag = hashlib.md5(body).hexdigest()
    return ObjectMeta(version, len(body), etag, 1.0, inline=body).encode()


def damaged(raw: bytes, fill: int) -> bytes:
    """``raw`` with its inline body overwritten by ``fill`` bytes (same length)."""
    cut = raw.index(BODY) + 1
    return raw[:cut] + bytes([fill]) * (len(raw) - cut)


GOOD = record(b"hello, world")
LOW, HIGH = damaged(GOOD, 0x00), damaged(GOOD, 0xFF)  # sort below and above GOOD
values = st.one_of(
    st.none(),
    st.binary(max_size=3),
    st.sampled_from([GOOD, LOW, HIGH, record(b"other"), damaged(record(b"other"), 0x7F)]),
)
entries = st.builds(
    Entry,
    timestamp=st.integers(0, 5),
    writer=st.sampled_from(["a", "b", "c"]),
    value=values,
)


def test_the_stored_forms_used_here() -> None:
    assert intact(GOOD) and not intact(LOW) and not intact(HIGH)
    assert LOW < GOOD < HIGH
    assert intact(b'{"not": "an object"}') and intact(b"1")  # nothing to check
    assert not intact(b"{not json" + BODY + b"x")  # a head that does not read


# (a, b, whether a outranks b)
OUTRANKS = [
    (Entry(5, "a", HIGH), Entry(5, "a", GOOD), False),  # damaged, greater bytes: still loses
    (Entry(5, "a", GOOD), Entry(5, "a", HIGH), True),
    (Entry(5, "a", GOOD), Entry(5, "a", LOW), True),
    (Entry(5, "a", LOW), Entry(5, "a", HIGH), False),  # both damaged: by bytes
    (Entry(5, "a", HIGH), Entry(5, "a", LOW), True),
    (Entry(6, "a", HIGH), Entry(5, "a", GOOD), True),  # a later write wins, whatever it holds
    (Entry(5, "b", LOW), Entry(5, "a", GOOD), True),  # so does a greater writer
    (Entry(5, "a", None), Entry(5, "a", GOOD), False),  # tombstone last on a tie
    (Entry(5, "a", GOOD), Entry(5, "a", GOOD), False),
]


def test_outranks_table() -> None:
    for a, b, want in OUTRANKS:
        assert outranks(a, b) is want, (a, b)
        if want:
            assert merge(b, a) == a and merge(a, b) == a


@given(entries, entries)
def test_merge_is_commutative(a: Entry, b: Entry) -> None:
    assert merge(merge(None, a), b) == merge(merge(None, b), a)


@given(entries, entries, entries)
def test_merge_is_associative(a: Entry, b: Entry, c: Entry) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(st.one_of(st.none(), entries), entries)
def test_merge_is_idempotent(x: Entry | None, a: Entry) -> None:
    once = merge(x, a)
    assert merge(once, a) == once


TIMESTAMPS = [
    # (now, previous ts, stamped): max(now, previous + 1)
    (100, None, 100),
    (100, 50, 100),
    (100, 100, 101),  # same millisecond: still after
    (100, 500, 501),  # our clock is behind the previous writer's: still after
]


def test_next_timestamp_table() -> None:
    for now, prev, want in TIMESTAMPS:
        previous = None if prev is None else Entry(prev, "z", b"x")
        assert next_timestamp(now, previous) == want


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3"]), entries), max_size=12),
    st.randoms(use_true_random=False),
)
def test_tables_converge_whatever_the_order_and_duplicates(
    log: list[tuple[str, Entry]], rnd: random.Random
) -> None:
    one = MetaDb(":memory:", "n1").table("objects")
    two = MetaDb(":memory:", "n2").table("objects")
    shuffled = log + log[: len(log) // 2]
    rnd.shuffle(shuffled)
    for pk, e in log:
        one.merge(pk, 7, e)
    for pk, e in shuffled:
        two.merge(pk, 7, e)
    assert list(one.entries(7)) == list(two.entries(7))
    assert one.meta.tree.roots("objects") == two.meta.tree.roots("objects")
    one.meta.close()
    two.meta.close()


def test_a_local_write_beats_a_future_dated_one(tmp_path: Path) -> None:
    t = MetaDb(tmp_path / "m.db", "me").table("objects")
    t.merge("b/k", 1, Entry(10_000, "other", b"theirs"))  # their clock is 9 s ahead
    t.put("b/k", 1, b"mine", now_ms=1_000)
    assert t.get("b/k") == b"mine" and t.entry("b/k") == Entry(10_001, "me", b"mine")
    t.put("b/k", 1, None, now_ms=1_000)
    assert t.get("b/k") is None and t.entry("b/k") == Entry(10_002, "me", None)


def test_range_pages_by_prefix_in_byte_order(tmp_path: Path) -> None:
    t = MetaDb(tmp_path / "m.db", "me").table("objects")
    for k in ["b/a", "b/b", "b/\u00e9", "c/a", "a/z"]:
        t.put(k, 0, b"x", now_ms=1)
    assert [pk for pk, _ in t.range("", prefix="b/")] == ["b/a", "b/b", "b/\u00e9"]
    assert [pk for pk, _ in t.range("b/a", prefix="b/", include_start=False)] == ["b/b", "b/\u00e9"]
    assert [pk for pk, _ in t.range("b/", prefix="b/", limit=1)] == ["b/a"]


def test_tombstones_collected_only_when_acknowledged_and_old(tmp_path: Path) -> None:
    t = MetaDb(tmp_path / "m.db", "me").table("refs")
    t.put("old", 0, None, now_ms=100)
    t.put("young", 0, None, now_ms=900)
    t.put("unacked", 0, None, now_ms=100)
    t.put("live", 0, b"1", now_ms=100)
    # cutoff 500: old (100, acked) goes; young (900) is too recent; unacked stays; live is
    # not a tombstone
    assert t.collect_tombstones(500, {"old", "young", "live"}) == 1
    assert [pk for pk, _ in t.entries(0)] == ["live", "unacked", "young"]


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_a_damaged_stored_copy_is_mended_by_the_good_one_and_its_tree_kept(
    tmp_path: Path, fill: int
) -> None:
    """The bytes of a row go bad on disk (the tree was not told); a merge of the same write
    from a replica replaces them, and the tree then equals a rebuild over the rows."""
    t = MetaDb(tmp_path / "m.db", "n2").table("objects")
    for i in range(20):  # neighbours under the same leaves
        t.merge(f"b/n{i}", 7, Entry(3, "n1", record(bytes([i]) * 40, f"v{i}")))
    good = Entry(5, "n1", GOOD)
    t.merge("b/k", 7, good)
    t.db.execute("UPDATE objects SET value = ? WHERE pk = 'b/k'", (damaged(GOOD, fill),))
    t.meta.forget("objects", "b/k")
    assert t.merge("b/k", 7, good) == good  # what a read repair or the scrub sends
    assert t.get("b/k") == GOOD
    kept = sorted(t.db.execute("SELECT * FROM merkle"))
    t.meta.rebuild_trees("objects")
    assert sorted(t.db.execute("SELECT * FROM merkle")) == kept
    # and a damaged copy arriving from elsewhere never replaces the good one
    assert t.merge("b/k", 7, Entry(5, "n1", damaged(GOOD, fill))) == good
