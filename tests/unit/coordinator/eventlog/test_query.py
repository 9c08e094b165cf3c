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
    Position,
    concerns,
    feed,
    page,
    read_page,
)
from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.store.errors import Compacted
from cloudless.store.memory import MemoryStore

# ---- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ({}, EventQuery()),
        ({"since": "42"}, EventQuery(after=Position(42))),
        ({"continue": "42"}, EventQuery(after=Position(42))),
        ({"continue": "42:0001-01"}, EventQuery(after=Position(42, "0001-01"))),
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
        ({"since": "-1"}, "query.since"),
        ({"since": "1e3"}, "query.since"),
        ({"since": "9" * 30}, "query.since"),  # beyond any revision (and int64)
        ({"since": "\u0661\u0662"}, "query.since"),  # Arabic-Indic digits: not ASCII
        ({"since": "4:x"}, "query.since"),  # a position is a continue token
        ({"continue": "abc"}, "query.continue"),
        ({"continue": "4:"}, "query.continue"),  # no event id
        ({"continue": "4:/x"}, "query.continue"),
        ({"continue": "4:a\nb"}, "query.continue"),
        ({"since": "1", "continue": "2"}, "not both"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "query.limit"),
        ({"limit": "Infinity"}, "query.limit"),
        ({"tail": "NaN"}, "query.tail"),
        ({"tail": "9" * 5000}, "query.tail"),  # beyond Python's int digit limit
        ({"kind": "Node!"}, "query.kind"),
        ({"kind": "x" * 100}, "query.kind"),
        ({"object": ""}, "query.object"),
        ({"object": "node/\n"}, "query.object"),
        ({"object": "x" * 301}, "query.object"),
        ({"follow": "maybe"}, "query.follow"),
    ],
)
def test_bad_query_is_refused_naming_the_parameter(query: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError, match=named) as e:
        EventQuery.parse(query)
    assert len(str(e.value)) < 300  # never echoes a huge value back


# ---- filters and pages (pure) -------------------------------------------------------------


def ev(kind: str, message: str, **fields: str) -> dict[str, Any]:
    return {"kind": kind, "message": message, "at": 0.0, **fields}


# (revision, id): body. Revision 12 is one transaction that wrote two events (a and b).
LOG = {
    (10, "a"): ev("node", "node n1 joined", node="n1"),
    (11, "a"): ev("workload", "workload web created (version 1)", workload="web"),
    (12, "a"): ev("replica", "replica web-1 placed on n1", workload="web", replica="web-1"),
    (12, "b"): ev("replica", "replica web-3 placed on n2", workload="web", replica="web-3"),
    (13, "a"): ev("node", "node n2 joined", node="n2"),
    (14, "a"): ev("security", "token t1 refused"),
    (15, "a"): ev("replica", "replica web-2 on n2: pending -> running", replica="web-2"),
}
ENTRIES = [(rev, name, body) for (rev, name), body in LOG.items()]


def ids(p: Any) -> list[str]:
    return [f"{e['revision']}{e['id']}" for e in p.events]


@pytest.mark.parametrize(
    ("query", "want", "next_token", "more"),
    [
        # no position: the newest tail (2) of all 7, oldest first; resume at the read revision
        (EventQuery(tail=2), ["14a", "15a"], "20", False),
        (EventQuery(tail=0), [], "20", False),
        # after 11: 12a 12b 13a 14a 15a; limit 3 stops at 13a -> the next page after 13a
        (EventQuery(after=Position(11), limit=3), ["12a", "12b", "13a"], "13:a", True),
        # limit 1 splits revision 12: the token points between its two events
        (EventQuery(after=Position(11), limit=1), ["12a"], "12:a", True),
        (EventQuery(after=Position(12, "a"), limit=1), ["12b"], "12:b", True),
        # after 12:b: 13a 14a 15a, nothing more: resume at 20
        (EventQuery(after=Position(12, "b"), limit=3), ["13a", "14a", "15a"], "20", False),
        # after the last revision: nothing
        (EventQuery(after=Position(20)), [], "20", False),
        # follow ignores limit: every event after the position
        (
            EventQuery(after=Position(11), limit=1, follow=True),
            ["12a", "12b", "13a", "14a", "15a"],
            "20",
            False,
        ),
        # kind
        (EventQuery(kind="node"), ["10a", "13a"], "20", False),
        # object by kind/name: tagged node n1 (10a), or naming n1 in the message (12a)
        (EventQuery(object="node/n1"), ["10a", "12a"], "20", False),
        # a workload: tagged (11a, 12a, 12b); 15a names web-2, not web
        (EventQuery(object="workload/web"), ["11a", "12a", "12b"], "20", False),
        # a bare name: any object field or a word of the message
        (EventQuery(object="n2"), ["12b", "13a", "15a"], "20", False),
        # kind and object together, paged: 13a only
        (EventQuery(kind="node", object="n2", after=Position(10), limit=5), ["13a"], "20", False),
    ],
)
def test_page(query: EventQuery, want: list[str], next_token: str, more: bool) -> None:
    p = page(ENTRIES, query, 20)
    assert (ids(p), p.next.token, p.more) == (want, next_token, more)
    for e in p.events:
        assert e == {**LOG[e["revision"], e["id"]], "revision": e["revision"], "id": e["id"]}


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_pages_chained_by_next_see_each_event_once(limit: int) -> None:
    seen: list[str] = []
    after = Position(0)
    for _ in range(10):
        p = page(ENTRIES, EventQuery(after=after, limit=limit), 20)
        seen += ids(p)
        after = p.next
        if not p.more:
            break
    assert seen == [f"{r}{n}" for r, n in LOG]


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
        async with contextlib.aclosing(feed(state.events, EventQuery(), first.next)) as f:
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
        query = EventQuery(kind="node")
        async with contextlib.aclosing(feed(state.events, query, Position(start))) as f:
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


async def test_feed_from_between_two_events_of_one_transaction() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    ops = []
    for i in range(3):  # one transaction, three events: one revision
        name, body = event("replica", f"replica r{i} placed", clock.now() + i * 1e-6, n=str(i))
        ops.append(state.events.put_op(name, body))
    rev = (await store.txn((), ops)).revision
    listing = await state.events.list()
    first = listing.records[0].name
    got: list[str] = []

    async def follow() -> None:
        after = Position(rev, first)  # a reader cut after the first of the three
        async with contextlib.aclosing(feed(state.events, EventQuery(), after)) as f:
            async for body in f:
                got.append(body["n"])

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(follow())
        await put(state, clock, 3)
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
    assert got == ["1", "2", "3"]
