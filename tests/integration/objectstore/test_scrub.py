"""Scrub finds a rotten block, quarantines it and brings a good copy back from a replica;
its pace follows the configured rate on the injected clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import BlockStore, block_hash
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.replication import ReplicatedBlocks
from cloudless.objectstore.scrub import Scrubber
from cloudless.objectstore.testing import LoopbackCluster


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_scrub_repairs_a_rotten_block_from_a_replica(tmp_path: Path) -> None:
    roles = {f"n{i}": NodeRole(f"z{i}", 10**9) for i in range(1, 4)}
    c = await LoopbackCluster(tmp_path, roles, replication=3).start()
    try:
        data = os.urandom(1_500_000)
        await c.engine("n1").put("b", "k", body(data), content_type="x", user_meta={})
        n2 = c.nodes["n2"]
        assert n2.cluster is not None
        h = block_hash(data[: 1 << 20])
        for _ in range(500):  # the PUT returned at a write quorum: n2's copies may be on the way
            if n2.local.blocks.has(h) and n2.local.blocks.has(block_hash(data[1 << 20 :])):
                break
            await asyncio.sleep(0.02)
        good = n2.local.blocks.path(h).read_bytes()
        n2.local.blocks.path(h).write_bytes(b"\0" * len(good))  # rot on n2 only
        scrub = Scrubber(
            n2.local.blocks, c.clock, bytes_per_second=0, repair=ReplicatedBlocks(n2.cluster).read
        )
        report = await scrub.scrub_once()
        assert report.corrupt == [h] and report.repaired == [h] and report.checked == 2
        assert n2.local.blocks.path(h).read_bytes() == good
        assert (n2.local.blocks.root / "corrupt" / h).exists()
    finally:
        await c.close()


async def test_scrub_paces_itself(tmp_path: Path) -> None:
    clock = FakeClock()
    blocks = BlockStore(tmp_path / "b", MetaDb(tmp_path / "m.db", "n1"))
    for i in range(3):
        d = bytes([i]) * (1 << 20)
        blocks.write_sync(block_hash(d), d)
    # 3 MiB at 1 MiB/s: the pass takes 3 s of (fake) time
    task = asyncio.ensure_future(Scrubber(blocks, clock, bytes_per_second=1 << 20).scrub_once())
    await clock.run_for(2.5, step=0.5)
    assert not task.done()
    await clock.run_for(1.0, step=0.5)
    report = await asyncio.wait_for(task, 5)
    assert report.checked == 3 and report.bytes == 3 << 20 and report.corrupt == []
