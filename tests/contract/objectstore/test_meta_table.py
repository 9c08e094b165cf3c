"""The ``MetaTable`` seam's contract, run on one node's local tables and on tables replicated
over three loopback nodes (R=3, mutual TLS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import BlockStore
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.seams import Tables
from cloudless.objectstore.testing import LoopbackCluster


@pytest.fixture(params=["local", "replicated"])
async def tables(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tables]:
    if request.param == "local":
        meta = MetaDb(tmp_path / "m.db", "n1")
        yield LocalStore(meta, BlockStore(tmp_path / "b", meta), FakeClock())
        meta.close()
        return
    roles = {f"n{i}": NodeRole(f"z{i}", 1) for i in range(1, 4)}
    c = await LoopbackCluster(tmp_path, roles, replication=3).start()
    try:
        cl = c.nodes["n1"].cluster
        assert cl is not None
        yield cl
    finally:
        await c.close()


async def test_put_then_entry(tables: Tables) -> None:
    t = tables.table("objects")
    assert await t.entry("b/k", 7) is None
    e = await t.put("b/k", 7, b"v1", now_ms=1000)
    assert e == Entry(1000, "n1", b"v1") and await t.entry("b/k", 7) == e


async def test_a_write_supersedes_what_it_read_even_with_a_slow_clock(tables: Tables) -> None:
    t = tables.table("objects")
    await t.put("b/k", 7, b"v1", now_ms=5000)
    e = await t.put("b/k", 7, b"v2", now_ms=1000)  # clock went back: max(1000, 5000 + 1)
    assert e.timestamp == 5001 and (await t.entry("b/k", 7)) == e


async def test_swap_returns_what_it_superseded(tables: Tables) -> None:
    t = tables.table("objects")
    prev, first = await t.swap("b/s", 7, b"v1", now_ms=100)
    assert prev is None and first == Entry(100, "n1", b"v1")
    prev, second = await t.swap("b/s", 7, b"v2", now_ms=50)  # max(50, 100 + 1)
    assert prev == first and second == Entry(101, "n1", b"v2")
    assert await t.entry("b/s", 7) == second


async def test_a_fresh_row_is_written_without_a_read(tables: Tables) -> None:
    t = tables.table("version_blocks")
    e = await t.put("ver1/0/0", 3, b"ref", now_ms=700, fresh=True)
    assert e == Entry(700, "n1", b"ref") and await t.entry("ver1/0/0", 3) == e
    # a later ordinary write over it reads it and supersedes it
    gone = await t.put("ver1/0/0", 3, None, now_ms=10)
    assert gone.timestamp == 701 and (await t.entry("ver1/0/0", 3)) == gone


async def test_tombstones_are_entries_without_value(tables: Tables) -> None:
    t = tables.table("objects")
    await t.put("b/k", 7, b"v1", now_ms=1)
    await t.put("b/k", 7, None, now_ms=2)
    e = await t.entry("b/k", 7)
    assert e is not None and e.deleted and e.timestamp == 2


async def test_range_orders_pages_and_filters(tables: Tables) -> None:
    t = tables.table("objects")
    for k in ["b/c", "b/a", "b/b", "c/a"]:
        await t.put(k, 3, b"x", now_ms=1)
    assert [pk for pk, _ in await t.range(3, "b/", prefix="b/")] == ["b/a", "b/b", "b/c"]
    assert [pk for pk, _ in await t.range(3, "b/a", prefix="b/", include_start=False)] == [
        "b/b",
        "b/c",
    ]
    assert [pk for pk, _ in await t.range(3, "b/", prefix="b/", limit=2)] == ["b/a", "b/b"]


async def test_commit_learns_what_it_superseded_and_whether_it_lost(tables: Tables) -> None:
    t = tables.table("objects")
    first = await t.put("b/c", 7, b"v1", now_ms=100)
    # The caller read nothing (a stale read): the replicas' answers name what it replaced.
    c = await t.commit("b/c", 7, b"v2", 200, None)
    assert c.entry == Entry(200, "n1", b"v2") and not c.lost and c.complete
    assert c.superseded() == [first]
    # Stamped 150 over a stale read: a replica already holds the later 200, so it lost.
    late = await t.commit("b/c", 7, b"v0", 150, None)
    assert late.lost and late.winner == c.entry
    assert set(late.superseded()) <= {first}  # a replica still on v1 took v0 over it
    assert await t.entry("b/c", 7) == c.entry
