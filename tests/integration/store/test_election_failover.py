"""Election + fencing on a real 3-member etcd while the etcd leader is SIGKILLed.

Two coordinators' electors loop doing fenced writes whenever they believe they lead. The
fencing property: ordered by revision, the terms of the writes that succeeded never go back
(once a newer term has written, an older term's writes are refused).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudless.store.election import Election
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import fenced_txn
from cloudless.store.types import Put
from cloudless.testing.etcd import SupervisedCluster, TestPki

pytestmark = pytest.mark.integration


async def test_fenced_writes_never_go_back_a_term(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path, pki, 3) as c:
        stores = [c.client(), c.client()]
        electors = [
            Election(s, f"coord-{i}:7443", ttl=3, name="failover") for i, s in enumerate(stores)
        ]
        log: list[tuple[int, int, str]] = []  # (revision, term, who)
        refused = 0
        stop = asyncio.Event()

        async def write_loop(e: Election) -> None:
            nonlocal refused
            n = 0
            while not stop.is_set():
                await asyncio.sleep(0.02)
                if not e.is_leader():
                    continue
                try:
                    fence = e.fence()
                    term = fence.compares[1].operand
                    n += 1
                    res = await fenced_txn(
                        e.store, fence, (), [Put(f"/fenced/{e.value}/{n}", b"x")]
                    )
                    assert isinstance(term, int)
                    log.append((res.revision, term, e.value))
                except Fenced:
                    refused += 1
                except StoreError:
                    pass

        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(e.run()) for e in electors]
            loops = [tg.create_task(write_loop(e)) for e in electors]
            for _ in range(3):
                await asyncio.sleep(3)
                leader = await c.leader_index()
                if leader is not None:
                    c.kill(leader)
            for _ in range(300):
                if any(e.is_leader() for e in electors):
                    break
                await asyncio.sleep(0.05)
            lead = 0 if electors[0].is_leader() else 1
            survivor = electors[1 - lead]
            runs[lead].cancel()  # the leading coordinator resigns: the other must take over
            # (if the resignation's revoke is lost in an etcd election, the old lease must
            # expire first: TTL 3 s, extended when the etcd leader changes)
            for _ in range(300):
                if survivor.is_leader():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)
            stop.set()
            for t in [*runs, *loops]:
                t.cancel()
        for s in stores:
            await s.close()

    log.sort()
    terms = [t for _, t, _ in log]
    assert terms == sorted(terms), "a deposed leader's write landed after its successor's"
    assert len(log) > 50 and len(set(terms)) >= 2
    assert log[-1][2] == survivor.value  # the survivor leads at the end
