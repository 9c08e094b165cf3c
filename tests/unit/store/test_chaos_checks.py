"""The chaos history checks must be able to fail: feed them bad histories."""

from __future__ import annotations

import pytest

from cloudless.store.types import KeyValue
from tests.chaos.store.workload import History, Read, check_reads_monotonic, verify


def test_stale_read_after_newer_read_is_caught() -> None:
    # read 1 (t=0..1) saw rev 10; read 2 started at t=2 (after read 1 ended) but saw rev 9
    with pytest.raises(AssertionError, match="saw revision 9 after another read had seen 10"):
        check_reads_monotonic([Read("/k", 0, 1, 10), Read("/k", 2, 3, 9)])


def test_overlapping_reads_may_disagree() -> None:
    # read 2 started (t=0.5) before read 1 ended (t=1): either order is linearizable
    check_reads_monotonic([Read("/k", 0, 1, 10), Read("/k", 0.5, 3, 9)])


def test_lost_acknowledged_write_is_caught() -> None:
    h = History()
    h.unique = {"/u/1": b"a", "/u/2": b"b"}
    with pytest.raises(AssertionError, match="1 acknowledged writes lost"):
        verify(h, {"/u/1": b"a"}, {})


def test_shared_key_rolled_back_is_caught() -> None:
    h = History()
    h.shared_acks["/s/1"].append((20, b"new"))
    final = {"/s/1": KeyValue("/s/1", b"old", 5, 15, 3)}
    with pytest.raises(AssertionError, match="final revision 15 < acked 20"):
        verify(h, {}, final)


def test_watch_that_missed_a_creation_is_caught() -> None:
    h = History()
    h.unique = {"/u/1": b"a", "/u/2": b"b"}
    h.watched = {"/u/1": b"a"}
    with pytest.raises(AssertionError, match="the watch missed 1 creations"):
        verify(h, {"/u/1": b"a", "/u/2": b"b"}, {})
