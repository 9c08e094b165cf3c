"""``outside_window``: which events a compaction pass deletes, as a table with the arithmetic
beside each case, plus a property check against a brute-force statement of the rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.coordinator.eventlog.window import EventBounds, event_time, outside_window
from cloudless.coordinator.state.cluster import event

NOW = 1_000_000.0


def at(*ages: float) -> list[tuple[str, float]]:
    """Events named e0, e1... that are ``ages`` seconds old."""
    return [(NOW - a, f"e{i}") for i, a in enumerate(ages)]


CASES = [
    # (events' ages, max_count, max_age_s, deleted)
    # nothing to do: 3 events <= 5, all younger than 100 s
    ((10, 20, 30), 5, 100, []),
    # count: 5 events - 3 kept = the 2 oldest (ages 50 and 40) go, oldest first
    ((10, 20, 30, 40, 50), 3, 100, ["e4", "e3"]),
    # age: 150 s and 101 s are older than 100 s; 100 s exactly is kept (not older)
    ((10, 150, 100, 101), 10, 100, ["e1", "e3"]),
    # both: ages 500 (too old) and, of the 4 left, one beyond max_count 3 (age 40)
    ((10, 20, 30, 40, 500), 3, 100, ["e4", "e3"]),
    # age takes more than count: 4 events, max 3 -> 1, but 3 are older than 25 s
    ((10, 30, 40, 50), 3, 25, ["e3", "e2", "e1"]),
    # max_count 1 keeps only the newest
    ((5, 1, 3), 1, 100, ["e0", "e2"]),
    # empty table
    ((), 3, 100, []),
]


@pytest.mark.parametrize(("ages", "count", "age", "deleted"), CASES)
def test_outside_window(
    ages: tuple[float, ...], count: int, age: float, deleted: list[str]
) -> None:
    bounds = EventBounds(max_count=count, max_age_s=age)
    assert outside_window(at(*ages), len(ages), bounds, NOW) == deleted


@pytest.mark.parametrize(
    ("total", "deleted"),
    [
        # the 3 oldest of a table of 10, keep 8: the 2 oldest go (10 - 8), the third stays
        (10, ["e0", "e1"]),
        # of a table of 20, keep 8: all 3 of the slice go (12 are beyond the count)
        (20, ["e0", "e1", "e2"]),
        # of a table of 5: within the count, and young
        (5, []),
    ],
)
def test_deciding_on_the_oldest_slice(total: int, deleted: list[str]) -> None:
    oldest = at(30, 20, 10)  # e0 oldest
    assert outside_window(oldest, total, EventBounds(max_count=8), NOW) == deleted


@given(
    ages=st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=40),
    count=st.integers(min_value=1, max_value=50),
    age=st.integers(min_value=1, max_value=1000),
    slice_=st.integers(min_value=1, max_value=40),
)
def test_slices_decide_as_the_whole_table(
    ages: list[int], count: int, age: int, slice_: int
) -> None:
    """Deciding slice by slice (oldest first, as the compactor reads) deletes exactly what
    deciding on the whole table deletes."""
    table = sorted(at(*ages))
    bounds = EventBounds(max_count=count, max_age_s=age)
    whole = outside_window(table, len(table), bounds, NOW)
    by_slices: list[str] = []
    while True:
        head = table[:slice_]
        doomed = outside_window(head, len(table), bounds, NOW)
        by_slices += doomed
        table = [e for e in table if e[1] not in doomed]
        if len(doomed) < slice_:
            break
    assert by_slices == whole


def test_same_time_ties_broken_by_name() -> None:
    # three events in the same microsecond, keep 1: the two smallest names go
    events = [(NOW, "b"), (NOW, "c"), (NOW, "a")]
    assert outside_window(events, 3, EventBounds(max_count=1), NOW) == ["a", "b"]


def test_event_time_from_the_name_the_writer_gives() -> None:
    name, _ = event("node", "node n1 joined", 1_700_000_000.123456)
    assert event_time(name) == pytest.approx(1_700_000_000.123456, abs=1e-6)
    # not an event name this cluster writes: infinitely old, so the next pass deletes it
    assert event_time("junk") == -math.inf
    assert event_time("0000000000000000000x-1") == -math.inf
    assert outside_window([(event_time("junk"), "junk")], 1, EventBounds(), NOW) == ["junk"]


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"max_count": 0}, "max_count 0"),
        ({"max_age_s": 0}, "max_age_s 0"),
        ({"max_age_s": math.inf}, "max_age_s inf"),
        ({"max_age_s": math.nan}, "max_age_s nan"),
        ({"interval_s": -1}, "interval_s -1"),
        ({"batch": 101}, "batch 101"),  # etcd: at most 128 ops in a transaction
    ],
)
def test_bad_bounds_are_refused_naming_the_field(kw: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EventBounds(**kw)  # type: ignore[arg-type]


@given(
    ages=st.lists(st.integers(min_value=0, max_value=1000), max_size=40),
    count=st.integers(min_value=1, max_value=50),
    age=st.integers(min_value=1, max_value=1000),
)
def test_keeps_exactly_the_newest_young_events(ages: list[int], count: int, age: int) -> None:
    events = at(*ages)
    bounds = EventBounds(max_count=count, max_age_s=age)
    doomed = set(outside_window(events, len(events), bounds, NOW))
    newest = sorted(events)[-count:]
    kept = {n for t, n in newest if t >= NOW - age}
    assert {n for _, n in events} - doomed == kept
