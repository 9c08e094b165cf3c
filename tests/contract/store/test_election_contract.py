"""Leader election and fencing, on every Store implementation."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cloudless.store.election import Election, Leadership
from cloudless.store.errors import Fenced
from cloudless.store.fence import fenced_txn
from cloudless.store.types import Put

from .conftest import Harness


async def until(h: Harness, cond, within: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Let time pass (fake or real) in small steps until ``cond()`` holds."""
    waited = 0.0
    while not cond():
        if waited > within:
            raise AssertionError("condition not reached in time")
        await h.advance(0.1)
        waited += 0.1


def election(h: Harness, who: str, name: str) -> Election:
    return Election(h.store, who, name=name, ttl=2, clock=h.clock)


@pytest.fixture
def name() -> str:
    return f"e-{uuid.uuid4().hex[:8]}"


async def test_one_leader_and_followers_see_it(harness: Harness, name: str) -> None:
    a, b = election(harness, "a:7000", name), election(harness, "b:7000", name)
    async with asyncio.TaskGroup() as tg:
        ta = tg.create_task(a.run())
        await until(harness, a.is_leader)
        tb = tg.create_task(b.run())
        await until(harness, lambda: b.leader() == "a:7000")
        assert not b.is_leader()
        with pytest.raises(Fenced, match="leader is a:7000"):
            b.fence()
        ta.cancel()  # a resigns: b takes over
        await until(harness, b.is_leader)
        assert b.leader() == "b:7000"
        tb.cancel()


async def test_changes_stream(harness: Harness, name: str) -> None:
    a = election(harness, "a:7000", name)
    seen: list[Leadership] = []

    async def watch() -> None:
        async for change in a.changes():
            seen.append(change)

    async with asyncio.TaskGroup() as tg:
        w = tg.create_task(watch())
        await asyncio.sleep(0)
        ta = tg.create_task(a.run())
        await until(harness, lambda: any(c.is_me for c in seen))
        ta.cancel()
        await until(harness, lambda: seen[-1].leader is None)
        w.cancel()
    assert seen[0].leader is None
    assert [c.leader for c in seen if c.is_me] == ["a:7000"]


async def test_deposed_leader_cannot_write(harness: Harness, name: str) -> None:
    """a leads and takes a fence; its lease then ends (as after a long partition) and b wins.
    a's fenced write must be refused even though a still holds the old fence."""
    s = harness.store
    a, b = election(harness, "a:7000", name), election(harness, "b:7000", name)
    key = f"/t/{name}/owned"
    async with asyncio.TaskGroup() as tg:
        ta = tg.create_task(a.run())
        await until(harness, a.is_leader)
        stale = a.fence()
        await fenced_txn(s, stale, (), [Put(key, b"a-1")])  # allowed while leading
        assert a._lease is not None
        await s.revoke_lease(a._lease.id)  # a's lease is gone: the key vanishes
        tb = tg.create_task(b.run())
        await until(harness, b.is_leader)
        with pytest.raises(Fenced, match="no longer the leader"):
            await fenced_txn(s, stale, (), [Put(key, b"a-2")])
        await fenced_txn(s, b.fence(), (), [Put(key, b"b-1")])
        ta.cancel()
        tb.cancel()
    kv = await s.get(key)
    assert kv is not None and kv.value == b"b-1"


async def test_depose_ends_only_the_named_term(harness: Harness, name: str) -> None:
    """b deposes a's term T: the key goes, a's fence is refused, a new term begins. Deposing
    a term that is not the current one, or our own, changes nothing."""
    s = harness.store
    a, b = election(harness, "a:7000", name), election(harness, "b:7000", name)
    key = f"/t/{name}/owned"
    async with asyncio.TaskGroup() as tg:
        ta = tg.create_task(a.run())
        await until(harness, a.is_leader)
        tb = tg.create_task(b.run())
        await until(harness, lambda: b.leader() == "a:7000")
        stale = a.fence()
        term = b._state.term
        assert term > 0
        assert not await b.depose(term + 1, "not the current term")
        assert not await a.depose(term, "our own term")
        assert a.is_leader() and b.deposed == []
        assert await b.depose(term, "test")
        assert b.deposed == [term]
        with pytest.raises(Fenced, match="no longer the leader"):
            await fenced_txn(s, stale, (), [Put(key, b"a-stale")])
        # a may still believe it leads until its watch sees the delete: its fence says no
        await until(harness, lambda: any(e.is_leader() and e._state.term > term for e in (a, b)))
        lead = a if a.is_leader() else b
        await fenced_txn(s, lead.fence(), (), [Put(key, b"new")])
        # the old term again (a late retry): nothing happens to the new one
        assert not await b.depose(term, "late retry")
        assert lead.is_leader()
        ta.cancel()
        tb.cancel()
    kv = await s.get(key)
    assert kv is not None and kv.value == b"new"
