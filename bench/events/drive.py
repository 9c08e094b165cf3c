"""The events workload shared by ``bench.events`` and its integration test: a cluster
writing events at a steady rate while the leader's ``EventCompactor`` keeps the window and
the store drops old history (as etcd's revision auto-compaction does, here every
``retain`` revisions instead of every 5 minutes)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cloudless.coordinator.eventlog import EventBounds, EventCompactor
from cloudless.coordinator.state.cluster import EVENTS_PREFIX
from cloudless.lib.clock import FakeClock
from cloudless.store.errors import Compacted
from cloudless.store.protocol import Store
from cloudless.store.types import Put

BODY = json.dumps(
    {
        "kind": "replica",
        "message": "replica web-7f3a9c2e on n-00017: pending -> running",
        "at": 0.0,
        "workload": "web",
        "replica": "web-7f3a9c2e",
    }
).encode()  # 135 bytes, a typical event
KEY_BYTES = len(EVENTS_PREFIX) + 27  # 20 digits of time, "-", 6 of sequence


@dataclass(frozen=True)
class Sample:
    written: int
    live: int  # events in the table
    size: int  # the store's size in bytes (etcd: the database file)
    elapsed_s: float


async def drive(
    store: Store,
    size: Callable[[], Awaitable[int]],
    *,
    total: int,
    bounds: EventBounds,
    rate: float = 1000.0,
    per_txn: int = 100,
    retain: int = 1000,
    samples: int = 20,
) -> list[Sample]:
    """Write ``total`` events, ``per_txn`` a transaction, at ``rate`` a second of fake time;
    a compaction pass every ``bounds.interval_s`` of it; ``samples`` samples."""
    clock = FakeClock()
    compactor = EventCompactor(store, EVENTS_PREFIX, bounds, clock)
    step = per_txn / rate
    next_pass = clock.monotonic() + bounds.interval_s
    every = max(1, total // per_txn // samples)
    out: list[Sample] = []
    seq = compacted_at = 0
    start = time.perf_counter()
    for tx in range(total // per_txn):
        micros = int(clock.now() * 1e6)
        ops = []
        for _ in range(per_txn):
            ops.append(Put(f"{EVENTS_PREFIX}{micros:020d}-{seq:06d}", BODY))
            seq = (seq + 1) % 1_000_000
        rev = (await store.txn((), ops)).revision
        clock.advance(step)
        if clock.monotonic() >= next_pass:
            await compactor.compact_once()
            next_pass += bounds.interval_s
        if rev - compacted_at >= 2 * retain:  # as MemoryStore(retain_revisions=...) does
            compacted_at = rev - retain
            try:
                await store.compact(compacted_at)
            except Compacted:
                pass
        if tx % every == every - 1:
            live = len((await store.list(EVENTS_PREFIX)).kvs)
            written = (tx + 1) * per_txn
            out.append(Sample(written, live, await size(), time.perf_counter() - start))
    return out
