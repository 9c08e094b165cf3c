"""Events stay bounded: 1,000,000 events written against a real etcd member (our launcher,
loopback, mTLS) and against ``MemoryStore``, while the leader's ``EventCompactor`` keeps the
window (5,000 events) and the store drops history older than 100 revisions (10,000 events).
Reports the store's size (etcd: its database file) as the writes go on.

Run from the repo root: ``python -m bench.events [TOTAL]`` -> ``bench/results/events.json``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import write_results
from bench.events.drive import BODY, KEY_BYTES, Sample, drive
from cloudless.coordinator.eventlog import EventBounds
from cloudless.store.etcd_admin import member_status
from cloudless.store.memory import MemoryStore
from cloudless.testing.etcd import SupervisedCluster, TestPki

# 100 revisions of 100-event transactions: 10,000 events of history, as etcd keeps 10,000
# revisions of single-event writes.
RETAIN = 100
BOUNDS = EventBounds(max_count=5_000, max_age_s=24 * 3600, interval_s=10.0)


def summary(samples: list[Sample], total: int) -> dict[str, Any]:
    return {
        "events_written": total,
        "bytes_written": total * (len(BODY) + KEY_BYTES),
        "peak_live_events": max(s.live for s in samples),
        "peak_size_bytes": max(s.size for s in samples),
        "final_size_bytes": samples[-1].size,
        "size_after_first_tenth": samples[len(samples) // 10].size,
        "elapsed_s": round(samples[-1].elapsed_s, 1),
        "samples": [asdict(s) for s in samples],
    }


async def on_memory(total: int) -> dict[str, Any]:
    store = MemoryStore(retain_revisions=RETAIN)

    async def size() -> int:
        return store.size_bytes()

    return summary(await drive(store, size, total=total, bounds=BOUNDS, retain=RETAIN), total)


async def on_etcd(total: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as d:
        base = Path(d)
        async with SupervisedCluster(base, TestPki(base / "pki"), 1) as c:
            store = c.client()

            async def size() -> int:
                return (await member_status(c.configs[0])).db_size

            try:
                samples = await drive(store, size, total=total, bounds=BOUNDS, retain=RETAIN)
            finally:
                await store.close()
    return summary(samples, total)


async def main(total: int) -> None:
    results: dict[str, Any] = {"bounds": asdict(BOUNDS), "retain_revisions": RETAIN}
    for name, run in (("memory", on_memory), ("etcd", on_etcd)):
        r = await run(total)
        print(
            f"{name}: {total:,} events ({r['bytes_written'] / 1e6:.0f} MB) in "
            f"{r['elapsed_s']:.0f} s; peak {r['peak_live_events']:,} live events, store "
            f"{r['peak_size_bytes'] / 1e6:.1f} MB peak, {r['final_size_bytes'] / 1e6:.1f} MB "
            f"at the end ({r['size_after_first_tenth'] / 1e6:.1f} MB after the first tenth)"
        )
        results[name] = r
    write_results("events", results)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
