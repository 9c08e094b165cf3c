"""Events stay bounded on real etcd: while events are written, the leader's compactor
deletes those outside the window and the store drops old history, so etcd's database file
stops growing (``bench.events`` runs the same workload to 1,000,000 events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.events.drive import drive
from cloudless.coordinator.eventlog import EventBounds
from cloudless.store.etcd_admin import member_status
from cloudless.testing.etcd import SupervisedCluster, TestPki

pytestmark = pytest.mark.integration


async def test_etcd_database_stops_growing(tmp_path: Path, pki: TestPki) -> None:
    bounds = EventBounds(max_count=5_000, max_age_s=24 * 3600, interval_s=10.0)
    async with SupervisedCluster(tmp_path, pki, 1) as c:
        store = c.client()

        async def size() -> int:
            return (await member_status(c.configs[0])).db_size

        try:
            # 60,000 events (11 MB of keys and values), 100 a transaction at 1,000/s of fake
            # time: a pass every 10,000 events; history kept: 100 revisions = 10,000 events
            samples = await drive(store, size, total=60_000, bounds=bounds, retain=100, samples=12)
        finally:
            await store.close()
    # the table holds at most max_count 5,000 + one interval's 10,000 events
    assert max(s.live for s in samples) <= 15_000
    # once the window and the history are full (30,000 events in), the file stops growing:
    # freed pages are reused. Without the compactor it grows ~2.3 MB per 10,000 events.
    first, second = samples[:6], samples[6:]
    plateau = max(s.size for s in first)
    assert all(s.size <= plateau * 1.05 for s in second), [s.size for s in samples]
    assert plateau < 20 << 20, plateau
