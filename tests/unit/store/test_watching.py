"""watch_with_resync: listing first, then changes; a compacted resume point re-lists."""

from __future__ import annotations

import contextlib

from cloudless.lib.clock import FakeClock
from cloudless.store import EventType, MemoryStore
from cloudless.store.tables.nodes import NODES
from cloudless.store.watching import (
    Changes,
    Resync,
    TableChanges,
    TableResync,
    watch_table,
    watch_with_resync,
)


async def test_lists_then_streams() -> None:
    s = MemoryStore(FakeClock())
    r_a = await s.put("/p/a", b"1")
    async with contextlib.aclosing(watch_with_resync(s, "/p/")) as it:
        first = await anext(it)
        assert isinstance(first, Resync)
        assert [kv.key for kv in first.kvs] == ["/p/a"] and first.revision == r_a
        r_b = await s.put("/p/b", b"1")
        second = await anext(it)
    assert isinstance(second, Changes)
    assert [(e.key, e.revision) for e in second.events] == [("/p/b", r_b)]


async def test_compacted_resume_point_relists() -> None:
    s = MemoryStore(FakeClock())
    r1 = await s.put("/p/a", b"1")  # a reader applied up to r1, then went away
    await s.put("/p/a", b"2")
    r3 = await s.put("/p/b", b"1")
    await s.compact(r3)  # history before r3 is gone; resuming at r1 + 1 is impossible
    async with contextlib.aclosing(watch_with_resync(s, "/p/", start_revision=r1 + 1)) as it:
        item = await anext(it)
        assert isinstance(item, Resync)
        assert [(kv.key, kv.value) for kv in item.kvs] == [("/p/a", b"2"), ("/p/b", b"1")]
        await s.delete("/p/a")
        item = await anext(it)
    assert isinstance(item, Changes) and item.events[0].type is EventType.DELETE


async def test_watch_table_decodes() -> None:
    s = MemoryStore(FakeClock())
    nodes = NODES.bind(s)
    await nodes.put("n1", {"id": "n1"})
    await s.put(nodes.prefix + "bad", b"junk")
    async with contextlib.aclosing(watch_table(nodes)) as it:
        first = await anext(it)
        assert isinstance(first, TableResync)
        assert [r.name for r in first.listing.records] == ["n1"]
        assert [e.key for e in first.listing.errors] == [nodes.prefix + "bad"]
        await nodes.put("n2", {"id": "n2"})
        second = await anext(it)
    assert isinstance(second, TableChanges)
    assert [(e.name, e.record is not None) for e in second.events] == [("n2", True)]


async def test_memory_auto_compaction_keeps_recent_history() -> None:
    s = MemoryStore(FakeClock(), retain_revisions=10)
    # revisions 2..41; whenever history reaches 20 revisions it is cut back to the last 10
    # (at 21 -> 11, 31 -> 21, 41 -> 31)
    for i in range(40):
        await s.put("/p/k", b"%d" % i)
    assert (await s.list("/p/", revision=35)).kvs[0].value == b"33"  # within history
    async with contextlib.aclosing(watch_with_resync(s, "/p/", start_revision=3)) as it:
        assert isinstance(await anext(it), Resync)  # rev 3 is long gone: re-list
