"""A leader's event loop stuck for longer than its lease must not cost it the lease: the
renewals run on a thread of their own (``cloudless.store.lease_keeper``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloudless.store.election import Election
from cloudless.testing.etcd import SupervisedCluster, TestPki

pytestmark = pytest.mark.integration


async def test_a_stuck_loop_keeps_its_lease(tmp_path: Path, pki: TestPki) -> None:
    async with SupervisedCluster(tmp_path, pki, 1) as c:
        store = c.client()
        e = Election(store, "coord-a:7443", ttl=2, name="stuck")
        task = asyncio.create_task(e.run())
        try:
            deadline = time.monotonic() + 15
            while not e.is_leader():
                assert time.monotonic() < deadline, "never became leader"
                await asyncio.sleep(0.05)
            term = e.fence()
            time.sleep(5.0)  # noqa: ASYNC251 -- the loop is stuck for 2.5 lease TTLs
            await asyncio.sleep(0.5)  # the loop runs again: the keeper's renewals count
            assert e.is_leader()
            assert e.fence() == term  # the same term: the lease never lapsed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.close()
