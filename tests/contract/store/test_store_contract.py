"""The Store contract: every implementation must pass this, unchanged.

Revisions are compared relative to a revision read at the start of each test, because the
etcd implementation shares one server between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from cloudless.store.errors import Compacted, InvalidRequest, LeaseNotFound, StoreError
from cloudless.store.types import (
    Compare,
    Delete,
    DeleteResult,
    EventType,
    Get,
    GetResult,
    KeyListing,
    Put,
    PutResult,
    WatchBatch,
)

from .conftest import Harness


@pytest.fixture
def p() -> str:
    """A private key prefix per test."""
    return f"/t/{uuid.uuid4().hex[:8]}/"


async def next_batch(it: object, wait: float = 5.0) -> WatchBatch:
    return await asyncio.wait_for(it.__anext__(), wait)  # type: ignore[attr-defined]


async def test_put_get_revisions_and_versions(harness: Harness, p: str) -> None:
    s = harness.store
    r0 = await s.revision()
    assert await s.get(p + "a") is None
    r1 = await s.put(p + "a", b"1")  # create: r0+1, version 1
    r2 = await s.put(p + "a", b"2")  # update: r0+2, version 2, create_revision kept
    assert (r1, r2) == (r0 + 1, r0 + 2)
    kv = await s.get(p + "a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r1, r2, 2)
    assert await s.revision() == r2


async def test_delete_resets_version_and_bumps_revision_only_if_something_went(
    harness: Harness, p: str
) -> None:
    s = harness.store
    await s.put(p + "a", b"1")
    r = await s.revision()
    assert await s.delete(p + "missing") == 0
    assert await s.revision() == r  # deleting nothing is not a write
    assert await s.delete(p + "a") == 1
    assert await s.revision() == r + 1
    r_new = await s.put(p + "a", b"again")
    kv = await s.get(p + "a")
    assert kv is not None and (kv.version, kv.create_revision) == (1, r_new)


async def test_list_prefix_sorted_and_delete_prefix(harness: Harness, p: str) -> None:
    s = harness.store
    for k in ["b", "a", "c/1", "c/2"]:
        await s.put(p + k, k.encode())
    await s.put(p[:-1] + "x", b"outside")  # shares the text but not the trailing '/'
    listing = await s.list(p)
    assert [kv.key for kv in listing.kvs] == [p + "a", p + "b", p + "c/1", p + "c/2"]
    assert listing.revision == await s.revision()
    assert await s.delete(p + "c/", prefix=True) == 2
    assert [kv.key for kv in (await s.list(p)).kvs] == [p + "a", p + "b"]
    await s.delete(p[:-1] + "x")


async def test_keys_are_the_first_few_and_the_count_of_all(harness: Harness, p: str) -> None:
    s = harness.store
    for k in ["d", "b", "a", "c", "e"]:
        await s.put(p + k, b"x" * 1000)
    await s.put(p[:-1] + "x", b"outside")
    first = await s.keys(p, limit=2)  # the 2 smallest of 5, no values, the count of all 5
    assert (first.keys, first.count, first.revision) == ((p + "a", p + "b"), 5, await s.revision())
    everything = await s.keys(p, limit=100)  # fewer than the limit: all of them
    assert everything.keys == tuple(p + k for k in "abcde") and everything.count == 5
    assert await s.keys(p + "none/", limit=1) == KeyListing((), 0, await s.revision())
    with pytest.raises(StoreError, match="limit"):
        await s.keys(p, limit=0)
    await s.delete(p[:-1] + "x")


async def test_list_at_past_revision(harness: Harness, p: str) -> None:
    s = harness.store
    r1 = await s.put(p + "a", b"1")
    await s.put(p + "a", b"2")
    await s.put(p + "b", b"1")
    await s.delete(p + "a")
    old = await s.list(p, revision=r1)
    assert [(kv.key, kv.value) for kv in old.kvs] == [(p + "a", b"1")]
    assert [kv.key for kv in (await s.list(p)).kvs] == [p + "b"]


@pytest.mark.parametrize(
    ("compare", "expect"),
    [
        # missing key: version/create/mod/lease are 0; a value compare is always false
        (lambda k, r: Compare.version(k, "==", 0), True),
        (lambda k, r: Compare.create_revision(k, "==", 0), True),
        (lambda k, r: Compare.mod_revision(k, "<", r + 100), True),
        (lambda k, r: Compare.value(k, "==", b""), False),
        (lambda k, r: Compare.value(k, "!=", b"x"), False),
        (lambda k, r: Compare.lease(k, "==", 0), True),
    ],
)
async def test_compare_on_missing_key(harness: Harness, p: str, compare, expect) -> None:  # type: ignore[no-untyped-def]
    s = harness.store
    r = await s.revision()
    res = await s.txn([compare(p + "k", r)], [Put(p + "ok", b"1")])
    assert res.succeeded is expect


async def test_cas_on_mod_revision_one_winner(harness: Harness, p: str) -> None:
    s = harness.store
    r = await s.put(p + "k", b"v0")
    # Two writers both read mod_revision r; only the first swap succeeds.
    a = await s.txn([Compare.mod_revision(p + "k", "==", r)], [Put(p + "k", b"A")])
    b = await s.txn([Compare.mod_revision(p + "k", "==", r)], [Put(p + "k", b"B")], [Get(p + "k")])
    assert (a.succeeded, b.succeeded) == (True, False)
    assert a.revision == r + 1
    assert b.revision == r + 1  # a failed txn with only reads writes nothing
    got = b.results[0]
    assert isinstance(got, GetResult) and got.kvs[0].value == b"A"


async def test_txn_ops_share_one_revision_and_report_results(harness: Harness, p: str) -> None:
    s = harness.store
    await s.put(p + "old", b"o")
    res = await s.txn(
        [Compare.absent(p + "new")],
        [Put(p + "new", b"n"), Delete(p + "old"), Put(p + "other", b"x"), Get(p, prefix=True)],
    )
    assert res.succeeded
    put, deleted, _, got = res.results
    assert isinstance(put, PutResult) and isinstance(deleted, DeleteResult)
    assert deleted.deleted == 1
    assert isinstance(got, GetResult)
    assert [kv.key for kv in got.kvs] == [p + "new", p + "other"]
    assert {kv.mod_revision for kv in got.kvs} == {res.revision}


async def test_same_key_twice_in_txn_is_refused(harness: Harness, p: str) -> None:
    with pytest.raises(InvalidRequest):
        await harness.store.txn([], [Put(p + "k", b"1"), Put(p + "k", b"2")])


async def test_watch_from_revision_replays_then_streams(harness: Harness, p: str) -> None:
    s = harness.store
    r1 = await s.put(p + "a", b"1")
    await s.put(p + "b", b"1")
    await s.delete(p + "a")
    seen: list[tuple[EventType, str, int]] = []
    async with contextlib.aclosing(s.watch(p, start_revision=r1)) as w:
        while len(seen) < 3:
            for e in (await next_batch(w)).events:
                seen.append((e.type, e.key, e.revision))
        r4 = await s.put(p + "c", b"1")
        batch = await next_batch(w)
    assert seen == [
        (EventType.PUT, p + "a", r1),
        (EventType.PUT, p + "b", r1 + 1),
        (EventType.DELETE, p + "a", r1 + 2),
    ]
    assert [(e.key, e.revision) for e in batch.events] == [(p + "c", r4)]
    assert batch.revision >= r4


async def test_watch_prev_kv_and_prefix_filter(harness: Harness, p: str) -> None:
    s = harness.store
    r = await s.put(p + "a", b"1")
    async with contextlib.aclosing(s.watch(p + "a", start_revision=r + 1, prev_kv=True)) as w:
        await s.put(p + "b", b"ignored")
        await s.put(p + "a", b"2")
        batch = await next_batch(w)
    (e,) = batch.events
    assert e.key == p + "a" and e.kv.value == b"2"
    assert e.prev_kv is not None and e.prev_kv.value == b"1"


async def test_compaction(harness: Harness, p: str) -> None:
    s = harness.store
    r1 = await s.put(p + "a", b"1")
    r2 = await s.put(p + "a", b"2")
    r3 = await s.put(p + "a", b"3")
    await s.compact(r2)
    with pytest.raises(Compacted) as info:
        async with contextlib.aclosing(s.watch(p, start_revision=r1)) as w:
            await next_batch(w)
    assert info.value.compact_revision == r2
    with pytest.raises(Compacted):
        await s.list(p, revision=r1)
    async with contextlib.aclosing(s.watch(p, start_revision=r3)) as w:
        assert [e.revision for e in (await next_batch(w)).events] == [r3]
    assert (await s.list(p, revision=r2)).kvs[0].value == b"2"


async def test_lease_keys_vanish_when_it_expires(harness: Harness, p: str) -> None:
    s = harness.store
    lease = await s.grant_lease(2)
    await s.put(p + "eph", b"x", lease=lease.id)
    kv = await s.get(p + "eph")
    assert kv is not None and kv.lease == lease.id
    assert 0 < await s.lease_ttl(lease.id) <= lease.ttl
    await harness.advance(lease.ttl + 2.5)
    assert await s.get(p + "eph") is None
    assert await s.lease_ttl(lease.id) == -1
    with pytest.raises(LeaseNotFound):
        await s.keepalive(lease.id)
    with pytest.raises(LeaseNotFound):
        await s.put(p + "late", b"x", lease=lease.id)


async def test_keepalive_extends_and_revoke_deletes(harness: Harness, p: str) -> None:
    s = harness.store
    lease = await s.grant_lease(3)
    await s.put(p + "a", b"x", lease=lease.id)
    await s.put(p + "b", b"x", lease=lease.id)
    for _ in range(3):  # 3 x 1.5 s = 4.5 s > ttl 3 s, but renewed every 1.5 s
        await harness.advance(1.5)
        assert await s.keepalive(lease.id) == lease.ttl
    assert await s.get(p + "a") is not None
    async with contextlib.aclosing(s.watch(p, start_revision=await s.revision() + 1)) as w:
        await s.revoke_lease(lease.id)
        events = (await next_batch(w)).events
        if len(events) < 2:
            events += (await next_batch(w)).events
    assert sorted((e.type, e.key) for e in events) == [
        (EventType.DELETE, p + "a"),
        (EventType.DELETE, p + "b"),
    ]
    assert len({e.revision for e in events}) == 1  # one revocation, one revision
    await s.revoke_lease(lease.id)  # idempotent


async def test_watcher_sees_lease_expiry(harness: Harness, p: str) -> None:
    s = harness.store
    lease = await s.grant_lease(2)
    r = await s.put(p + "leader", b"me", lease=lease.id)
    async with contextlib.aclosing(s.watch(p, start_revision=r + 1)) as w:
        task = asyncio.ensure_future(next_batch(w, wait=10))
        await asyncio.sleep(0)
        await harness.advance(lease.ttl + 2.5)
        batch = await task
    assert [(e.type, e.key) for e in batch.events] == [(EventType.DELETE, p + "leader")]


async def test_watch_from_a_future_revision_waits_for_it(harness: Harness, p: str) -> None:
    s = harness.store
    now = await s.revision()
    async with contextlib.aclosing(s.watch(p, start_revision=now + 3)) as w:
        await s.put(p + "a", b"1")  # now + 1: before the start, not delivered
        await s.put(p + "a", b"2")  # now + 2: not delivered
        r3 = await s.put(p + "a", b"3")
        batch = await next_batch(w)
    assert [(e.revision, e.kv.value) for e in batch.events] == [(r3, b"3")]
