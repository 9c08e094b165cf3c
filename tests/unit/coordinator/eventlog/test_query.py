"""``GET /v1/events`` as a query: parsing (bad input named), paging and filters (pure), and
the follow feed against ``MemoryStore`` (no gap, no duplicate, across a compacted watch)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from cloudless.coordinator.eventlog.query import (
    MAX_LIMIT,
    EventQuery,
    concerns,
    feed,
    page,
    read_page,
)
from cloudless.coordinator.state import ClusterState, event
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.store.errors import Compacted
from cloudless.store.memory import MemoryStore

# ---- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ({}, EventQuery()),
        ({"since": "42"}, EventQuery(since=42)),
        ({"continue": "42"}, EventQuery(since=42)),
        ({"since": "42", "continue": "42"}, EventQuery(since=42)),
        ({"kind": "node", "object": "node/n1"}, EventQuery(kind="node", object="node/n1")),
        ({"limit": "1000", "tail": "0"}, EventQuery(limit=1000, tail=0)),
        ({"follow": "1"}, EventQuery(follow=True)),
        ({"follow": "false"}, EventQuery(follow=False)),
    ],
)
def test_parse(query: dict[str, str], want: EventQuery) -> None:
    assert EventQuery.parse(query) == want


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"since": "-1"}, "query since"),
        ({"since": "1e3"}, "query since"),
        ({"since": "9" * 30}, "query since"),  # beyond any revision (and int64)
        ({"since": "١٢"}, "query since"),  # Arabic-Indic digits: isdigit() but not ASCII
        ({"continue": "abc"}, "query continue"),
        ({"since": "1", "continue": "2"}, "disagree"),
        ({"limit": "0"}, "query limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "query limit"),
        ({"limit": "Infinity"}, "query limit"),
        ({"tail": "NaN"}, "query tail"),
        ({"tail": "9" * 5000}, "query tail"),  # beyond Python's int digit limit
        ({"kind": "Node!"}, "query kind"),
        ({"kind": "x" * 100}, "query kind"),
        ({"object": ""}, "query object"),
        ({"object": "node/\n"}, "query object"),
        ({"object": "x" * 301}, "query object"),
        ({"follow": "maybe"}, "query follow"),
    ],
)
def test_bad_query_is_refused_naming_the_parameter(query: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named) as e:
        EventQuery.parse(query)
    assert len(str(e.value)) < 300  # never echoes a huge value back


# ---- filters and pages (pure) -------------------------------------------------------------


def ev(kind: str, message: str, **fields: str) -> dict[str, Any]:
    return {"kind": kind, "message": message, "at": 0.0, **fields}


# revision: body
LOG = {
    10: ev("node", "node n1 joined", node="n1"),
    11: ev("workload", "workload web created (version 1)", workload="web"),
    12: ev("replica", "replica web-1 placed on n1", workload="web", replica="web-1"),
    13: ev("node", "node n2 joined", node="n2"),
    14: ev("security", "token t1 refused"),
    15: ev("replica", "replica web-2 on n2: pending -> running", replica="web-2"),
}
RECORDS = list(LOG.items())


def revs(p: Any) -> list[int]:
    return [e["revision"] for e in p.events]


@pytest.mark.parametrize(
    ("query", "want", "next_since", "more"),
    [
        # no since: the newest tail (2) of all 6, oldest first; resume at the read revision 20
        (EventQuery(tail=2), [14, 15], 20, False),
        (EventQuery(tail=0), [], 20, False),
        # since 11: 12..15, limit 3 stops at 14 -> next page from 14
        (EventQuery(since=11, limit=3), [12, 13, 14], 14, True),
        # the next page: 15 only, nothing more: resume at 20
        (EventQuery(since=14, limit=3), [15], 20, False),
        # since the last revision: nothing, resume at 20
        (EventQuery(since=20), [], 20, False),
        # follow ignores limit: every event after since
        (EventQuery(since=11, limit=1, follow=True), [12, 13, 14, 15], 20, False),
        # kind
        (EventQuery(kind="node"), [10, 13], 20, False),
        # object by kind/name: tagged node n1 (10), or naming n1 in the message (12)
        (EventQuery(object="node/n1"), [10, 12], 20, False),
        # a workload: tagged (11, 12); 15 names web-2, not web
        (EventQuery(object="workload/web"), [11, 12], 20, False),
        # a bare name: any object field or a word of the message
        (EventQuery(object="n2"), [13, 15], 20, False),
        # kind and object together, paged: 13 only
        (EventQuery(kind="node", object="n2", since=10, limit=5), [13], 20, False),
    ],
)
def test_page(query: EventQuery, want: list[int], next_since: int, more: bool) -> None:
    p = page(RECORDS, query, 20)
    assert (revs(p), p.next_since, p.more) == (want, next_since, more)
    assert all(e == {**LOG[e["revision"]], "revision": e["revision"]} for e in p.events)


def test_pages_chained_by_next_since_see_each_event_once() -> None:
    seen: list[int] = []
    since = 0
    for _ in range(10):
        p = page(RECORDS, EventQuery(since=since, limit=2), 20)
        seen += revs(p)
        since = p.next_since
        if not p.more:
            break
    assert seen == sorted(LOG)


def test_concerns_matches_whole_words_only() -> None:
    e = ev("replica", "replica web-1 on n1-abc: pending -> running")
    assert concerns(e, "node/n1-abc")
    assert not concerns(e, "node/n1")  # a whole word, not a substring
    assert concerns(ev("x", "x", workload="web"), "workload/web")
    assert not concerns(ev("workload", "workload web2 created"), "workload/web")
    assert not concerns(ev("node", "a node joined", node="n1"), "workload/n1")  # tag of a kind


# ---- the follow feed against a store ------------------------------------------------------


async def put(state: ClusterState, clock: FakeClock, i: int, kind: str = "node") -> int:
    name, body = event(kind, f"{kind} event {i}", clock.now(), n=str(i))
    clock.advance(0.001)
    return await state.events.put(name, body)


async def test_feed_resumes_after_a_compacted_watch_without_gap_or_duplicate() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    for i in range(5):
        await put(state, clock, i)
    first = await read_page(state.events, EventQuery(tail=3))
    assert [e["n"] for e in first.events] == ["2", "3", "4"]
    got: list[dict[str, Any]] = []

    async def follow() -> None:
        async with contextlib.aclosing(feed(state.events, EventQuery(), first.next_since)) as f:
            async for body in f:
                got.append(body)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(follow())
        for i in range(5, 8):
            await put(state, clock, i)
        await asyncio.sleep(0)
        # the watch breaks and its history is gone: the feed re-reads the table
        await store.compact(await store.revision())
        store.break_watches("/", Compacted(0))
        for i in range(8, 10):
            await put(state, clock, i)
        for _ in range(10):
            await asyncio.sleep(0)
        task.cancel()
    assert [e["n"] for e in got] == [str(i) for i in range(5, 10)]
    assert [e["revision"] for e in got] == sorted({e["revision"] for e in got})


async def test_feed_filters_and_skips_deletes() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    start = await store.revision()
    got: list[str] = []

    async def follow() -> None:
        async with contextlib.aclosing(feed(state.events, EventQuery(kind="node"), start)) as f:
            async for body in f:
                got.append(body["n"])

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(follow())
        await put(state, clock, 1, "node")
        await put(state, clock, 2, "workload")
        await store.delete(state.events.prefix, prefix=True)  # the compactor's deletes
        await put(state, clock, 3, "node")
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
    assert got == ["1", "3"]
