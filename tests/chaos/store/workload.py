"""A bounded chaos run against a supervised 3-member etcd cluster, and its history checks.

Writers (each with its own client) loop: create a unique key (``/chaos/u/<w>/<n>``), put a
shared key (``/chaos/s/<k>``) and read a random shared key, recording every acknowledged write
and every read with its real-time interval. A killer SIGKILLs the etcd leader every few
seconds; the supervisors restart it. Afterwards:

* every acknowledged unique key is present with its value (0 acknowledged writes lost);
* every shared key's final mod revision is >= its last acknowledged write's revision (and
  holds that write's value if equal);
* no read goes back in revision: a read that began after another read of the same key ended
  sees a mod revision at least as new (linearizability, checked as a sweep);
* each writer's acknowledged revisions strictly increase.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cloudless.store.errors import OutcomeUnknown, StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.types import Compare, Put
from cloudless.testing.etcd import SupervisedCluster, TestPki

SHARED_KEYS = 16


@dataclass
class Read:
    key: str
    start: float
    end: float
    mod_revision: int  # 0 = absent


@dataclass
class History:
    unique: dict[str, bytes] = field(default_factory=dict)
    shared_acks: dict[str, list[tuple[int, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reads: list[Read] = field(default_factory=list)
    writer_revisions: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))
    unknown: int = 0
    unavailable: int = 0
    kills: int = 0
    drain_seconds: float = 0.0
    watched: dict[str, bytes] = field(default_factory=dict)
    watched_revisions: list[int] = field(default_factory=list)
    watch_duplicates: int = 0

    @property
    def acked(self) -> int:
        return len(self.unique) + sum(len(v) for v in self.shared_acks.values())


async def writer(w: int, store: EtcdStore, h: History, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        n += 1
        key = f"/chaos/u/{w:02d}/{n:06d}"
        value = b"w%d-n%d" % (w, n)
        try:
            res = await store.txn([Compare.absent(key)], [Put(key, value)])
            assert res.succeeded, f"{key} existed before its only writer created it"
            h.unique[key] = value
            h.writer_revisions[w].append(res.revision)
            skey = f"/chaos/s/{rng.randrange(SHARED_KEYS):02d}"
            rev = await store.put(skey, value)
            h.shared_acks[skey].append((rev, value))
            h.writer_revisions[w].append(rev)
        except OutcomeUnknown:
            h.unknown += 1
        except StoreError:
            h.unavailable += 1
            await asyncio.sleep(0.05)
        rkey = f"/chaos/s/{rng.randrange(SHARED_KEYS):02d}"
        start = time.monotonic()
        try:
            kv = await store.get(rkey)
        except StoreError:
            continue
        h.reads.append(Read(rkey, start, time.monotonic(), kv.mod_revision if kv else 0))


async def watcher(store: EtcdStore, start: int, h: History) -> None:
    """Follow every change from ``start`` through all the kills (the store resumes the watch)."""
    async with contextlib.aclosing(store.watch("/chaos/", start_revision=start)) as batches:
        async for batch in batches:
            for e in batch.events:
                if e.key.startswith("/chaos/u/"):
                    if e.key in h.watched:
                        h.watch_duplicates += 1
                    h.watched[e.key] = e.kv.value
                h.watched_revisions.append(e.revision)


async def killer(c: SupervisedCluster, h: History, stop: asyncio.Event, every: float) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every * (0.75 + 0.5 * rng.random()))
        if stop.is_set():
            return
        i = await c.leader_index()
        if i is not None and not stop.is_set():
            c.kill(i)
            h.kills += 1


async def run_chaos(
    base: Path, pki: TestPki, *, seconds: float, writers: int, kill_every: float
) -> History:
    h = History()
    async with SupervisedCluster(base, pki, 3) as c:
        stores = [c.client(retry_for=30.0) for _ in range(writers)]
        watch_store = c.client(retry_for=30.0)
        start = await watch_store.revision() + 1
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as outer:
            watching = outer.create_task(watcher(watch_store, start, h))
            async with asyncio.TaskGroup() as tg:
                for w in range(writers):
                    tg.create_task(writer(w, stores[w], h, stop, seed=w))
                tg.create_task(killer(c, h, stop, kill_every))
                await asyncio.sleep(seconds)
                stop.set()
                t0 = time.monotonic()
            h.drain_seconds = time.monotonic() - t0
            await c.wait_leader(within=60)
            check = stores[0]
            present = {kv.key: kv.value for kv in (await check.list("/chaos/u/")).kvs}
            finals = {kv.key: kv for kv in (await check.list("/chaos/s/")).kvs}
            end = await check.revision()
            for _ in range(600):  # let the watch catch up with the last write (<= 30 s)
                if h.watched_revisions and h.watched_revisions[-1] >= end:
                    break
                await asyncio.sleep(0.05)
            watching.cancel()
        for s in [*stores, watch_store]:
            await s.close()
    verify(h, present, finals)
    return h


def verify(h: History, present: dict[str, bytes], finals: dict) -> None:  # type: ignore[type-arg]
    lost = [k for k, v in h.unique.items() if present.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    for key, acks in h.shared_acks.items():
        rev, value = max(acks)
        kv = finals.get(key)
        assert kv is not None, f"{key}: acknowledged at {rev} but absent"
        assert kv.mod_revision >= rev, f"{key}: final revision {kv.mod_revision} < acked {rev}"
        if kv.mod_revision == rev:
            assert kv.value == value
    for w, revs in h.writer_revisions.items():
        assert all(a < b for a, b in itertools.pairwise(revs)), f"writer {w} went back"
    check_reads_monotonic(h.reads)
    # the watch saw every change once, in order, across every leader kill
    missed = [k for k in present if k not in h.watched]
    assert not missed, f"the watch missed {len(missed)} creations, e.g. {missed[:5]}"
    assert h.watch_duplicates == 0, f"the watch delivered {h.watch_duplicates} creations twice"
    revs = h.watched_revisions
    assert all(a <= b for a, b in itertools.pairwise(revs)), "watch events out of order"


def check_reads_monotonic(reads: list[Read]) -> None:
    """A read that starts after another read of the same key ended must not see an older
    revision. Sweep per key: reads by start time, folding in reads that ended before."""
    by_key: dict[str, list[Read]] = defaultdict(list)
    for r in reads:
        by_key[r.key].append(r)
    for key, rs in by_key.items():
        by_end = sorted(rs, key=lambda r: r.end)
        j = 0
        newest_done = 0
        for r in sorted(rs, key=lambda r: r.start):
            while j < len(by_end) and by_end[j].end < r.start:
                newest_done = max(newest_done, by_end[j].mod_revision)
                j += 1
            assert r.mod_revision >= newest_done, (
                f"{key}: a read saw revision {r.mod_revision} after another read had seen "
                f"{newest_done}"
            )
