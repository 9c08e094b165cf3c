"""The layout history's trackers (``history.py``): a new version is pulled once every node
has seen it, and older versions are dropped once every holder synced it and every node reads
from it; what each node still owes is named (``waiting_on``)."""

from __future__ import annotations

import pytest

from cloudless.objectstore import history as h
from cloudless.objectstore.layout import LayoutError, NodeRole
from cloudless.objectstore.layout_store import LayoutCodec

GiB = 1 << 30
ROLES = {"a": NodeRole("z1", GiB), "b": NodeRole("z2", GiB), "c": NodeRole("z3", GiB)}


def two_versions() -> h.LayoutHistory:
    hist = h.stage_replication(h.LayoutHistory(), 3)
    for n, r in ROLES.items():
        hist = h.stage(hist, n, r)
    v1, _ = h.apply(hist, 0)
    v2, _ = h.apply(h.stage(v1, "d", NodeRole("z1", GiB)), 1)
    return v2


def test_a_first_layout_waits_for_nobody() -> None:
    hist = h.apply(h.stage(h.stage_replication(h.LayoutHistory(), 1), "a", ROLES["a"]), 0)[0]
    assert hist.seen == {"a": 1} and hist.reading == {"a": 1} and hist.synced == {"a": 1}
    assert h.waiting_on(hist) == {} and h.sync_may_start(hist)


def test_the_stages_of_a_transition() -> None:
    hist = two_versions()
    assert h.waiting_on(hist) == {n: "has not seen v2" for n in "abcd"}
    assert not h.sync_may_start(hist)
    for n in "abc":
        hist = h.observe(hist, n, 2, 1)
    assert not h.sync_may_start(hist) and h.waiting_on(hist) == {"d": "has not seen v2"}
    hist = h.observe(hist, "d", 2, 1)
    assert h.sync_may_start(hist)
    holders = sorted({n for p in hist.versions[1].partitions for n in p})
    assert h.waiting_on(hist) == {n: "has not synced v2" for n in holders}
    for n in holders:
        hist = h.ack_synced(hist, n, 2)
    # synced: nodes that refresh read from v2, but v1 stays live (and written to) until
    # every node says it reads from v2, as one whose view lags still reads v1
    assert hist.read_version() is hist.current and len(hist.versions) == 2
    assert h.waiting_on(hist) == {n: "does not read from v2 yet" for n in "abcd"}
    for n in "abc":
        hist = h.observe(hist, n, 2, 2)
    assert len(hist.versions) == 2 and h.waiting_on(hist) == {"d": "does not read from v2 yet"}
    assert h.observed(hist, "a", 2, 2) and not h.observed(hist, "d", 2, 2)
    hist = h.observe(hist, "d", 2, 2)
    assert [v.version for v in hist.versions] == [2] and h.waiting_on(hist) == {}


def test_acknowledgements_never_go_back() -> None:
    hist = h.observe(two_versions(), "a", 2, 1)
    assert h.observe(hist, "a", 1, 1) is hist  # an older report changes nothing
    assert hist.seen["a"] == 2 and hist.reading["a"] == 1


@pytest.mark.parametrize(
    ("seen", "reading", "error"),
    [
        (3, 1, "cannot have seen v3 and read from v1, newest is 2"),
        (2, 3, "cannot have seen v2 and read from v3, newest is 2"),
        (1, 2, "cannot have seen v1 and read from v2, newest is 2"),
    ],
)
def test_impossible_reports_are_refused_naming_the_node(
    seen: int, reading: int, error: str
) -> None:
    hist = two_versions()
    with pytest.raises(LayoutError, match=f"node 'a': {error}"):
        h.observe(hist, "a", seen, reading)


def test_the_trackers_are_stored_and_an_older_record_reads_as_unacknowledged() -> None:
    hist = h.observe(two_versions(), "a", 2, 1)
    codec = LayoutCodec()
    data = codec.encode(hist)
    assert codec.decode(data) == hist
    del data["seen"], data["reading"]  # a record written before the trackers existed
    old = codec.decode(data)
    assert old.seen == {} and old.reading == {} and "a" in h.waiting_on(old)


def test_layout_show_names_who_a_transition_waits_for() -> None:
    from cloudless.objectstore.admin import render_history

    lines = render_history(h.observe(two_versions(), "a", 2, 1))
    assert "transition waits for: b has not seen v2; c has not seen v2; d has not seen v2" in (
        lines
    )
