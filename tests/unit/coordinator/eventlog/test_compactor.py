"""``EventCompactor`` against ``MemoryStore`` on a fake clock: the leader's loop keeps the
events table inside its window, in fenced batches, and a cluster that writes a million
events keeps a store of fixed size."""

from __future__ import annotations

import asyncio
import json

import pytest

from cloudless.coordinator.eventlog import EventBounds, EventCompactor
from cloudless.coordinator.state.cluster import EVENTS_PREFIX, ClusterState, event
from cloudless.lib.clock import FakeClock
from cloudless.store.errors import Fenced
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Compare, Put


async def names(store: MemoryStore) -> list[str]:
    return [kv.key[len(EVENTS_PREFIX) :] for kv in (await store.list(EVENTS_PREFIX)).kvs]


async def write(state: ClusterState, clock: FakeClock, n: int, step: float = 1.0) -> None:
    for i in range(n):
        name, body = event("node", f"node n{i} joined", clock.now(), node=f"n{i}")
        await state.events.put(name, body)
        clock.advance(step)


async def test_a_pass_keeps_the_newest_max_count() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    await write(state, clock, 250)  # one a second: ages 250 s .. 1 s
    bounds = EventBounds(max_count=30, max_age_s=3600, batch=7)
    c = EventCompactor(store, EVENTS_PREFIX, bounds, clock)
    # 250 - 30 = 220 deleted, in ceil(220 / 7) = 32 transactions
    rev = await store.revision()
    assert await c.compact_once() == 220
    assert await store.revision() == rev + 32
    left = [r.value["node"] for r in (await state.events.list()).records]
    assert left == [f"n{i}" for i in range(220, 250)]  # the newest 30, in time order
    assert await c.compact_once() == 0  # nothing more to do


async def test_the_loop_enforces_age_as_time_passes() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    bounds = EventBounds(max_count=1000, max_age_s=60, interval_s=10)
    c = EventCompactor(store, EVENTS_PREFIX, bounds, clock)
    await write(state, clock, 30, step=2.0)  # at t = 0, 2, ..., 58; now t = 60
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(c.run())
        for _ in range(5):
            await asyncio.sleep(0)  # first pass at t = 60: nothing older than t = 0
        assert len(await names(store)) == 30
        await clock.run_for(21, step=1.0)  # passes at 70 and 80: older than t = 20 go (0..18: 10)
        assert len(await names(store)) == 20
        await clock.run_for(60, step=1.0)  # the pass at t = 140: every event is older than 60 s
        assert await names(store) == []
        assert c.deleted == 30
        task.cancel()


async def test_a_deposed_leader_stops_deleting() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    await write(state, clock, 20)
    await store.put("/election", b"other")
    fence = Fence((Compare.value("/election", "==", b"me"),), "me")
    c = EventCompactor(store, EVENTS_PREFIX, EventBounds(max_count=5), clock, fence=fence)
    with pytest.raises(Fenced):
        await c.run()
    assert len(await names(store)) == 20


# ---- a long run ---------------------------------------------------------------------------

BODY = json.dumps(
    {
        "kind": "replica",
        "message": "replica web-7f3a9c2e on n-00017: pending -> running",
        "at": 0.0,
        "workload": "web",
        "replica": "web-7f3a9c2e",
    }
).encode()  # 135 bytes, a typical event
KEY = len(EVENTS_PREFIX) + 27  # 20 digits of time, "-", 6 of sequence


async def write_and_compact(total: int, *, retain: int = 100) -> tuple[int, int, int]:
    """Write ``total`` events at 1,000/s (100 per transaction every 0.1 s of fake time) while
    the leader's compactor runs every 10 s with ``max_count`` 5,000; the store keeps
    ``retain`` revisions of history (etcd's auto-compaction keeps 10,000). Returns the
    peak number of live events, the peak store size in bytes and how many were deleted,
    sampled every 50,000 events."""
    clock = FakeClock()
    store = MemoryStore(clock, retain_revisions=retain)
    bounds = EventBounds(max_count=5_000, max_age_s=24 * 3600, interval_s=10.0)
    compactor = EventCompactor(store, EVENTS_PREFIX, bounds, clock)
    peak_size = peak_live = seq = 0
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(compactor.run())
        for tx in range(total // 100):
            micros = int(clock.now() * 1e6)
            ops = []
            for _ in range(100):
                ops.append(Put(f"{EVENTS_PREFIX}{micros:020d}-{seq:06d}", BODY))
                seq = (seq + 1) % 1_000_000
            await store.txn((), ops)
            clock.advance(0.1)
            await asyncio.sleep(0)  # the compactor's turn, when its interval is up
            await asyncio.sleep(0)
            if tx % 500 == 499:
                live = len((await store.list(EVENTS_PREFIX)).kvs)
                peak_live, peak_size = max(peak_live, live), max(peak_size, store.size_bytes())
        task.cancel()
    return peak_live, peak_size, compactor.deleted


# Live events <= max_count 5,000 + one interval's writes 10,000 + one batch 100 = 15,100.
# History <= 2 x 100 retained revisions x 100 keys a transaction = 20,000 versions.
# Store <= (15,100 + 20,000) x (135 + 45) bytes = 6.3 MB, however many events were written.
LIVE_BOUND = 15_100
SIZE_BOUND = (15_100 + 20_000) * (len(BODY) + KEY)


async def test_many_events_keep_a_fixed_store_size() -> None:
    """100,000 events (18 MB written) in a few seconds; ``bench.events`` runs the same loop
    to 1,000,000 on this store and on etcd. The bound holds at every sample, and the samples
    after the first 50,000 show the plateau: the size no longer grows with what is written."""
    live, size, deleted = await write_and_compact(100_000)
    assert live <= LIVE_BOUND, live
    assert size <= SIZE_BOUND, (size, SIZE_BOUND)
    assert deleted >= 100_000 - LIVE_BOUND
    assert SIZE_BOUND * 2 < 100_000 * (len(BODY) + KEY)  # fixed, not a share of the writes
