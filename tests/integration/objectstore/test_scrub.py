"""Scrub finds a rotten block, quarantines it and brings a good copy back from a replica;
its pace follows the configured rate on the injected clock. An object row whose inline body
rotted on one replica is served right by every node, mended by a read or by the scrub, and
never copied to another replica (even when its bytes sort above the good ones)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import BlockStore, block_hash
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.records import BODY, OBJECTS, intact, object_pk
from cloudless.objectstore.replication import ReplicatedBlocks
from cloudless.objectstore.scrub import Scrubber
from cloudless.objectstore.testing import LoopbackCluster, LoopbackNode
from tests.integration.objectstore.conftest import body


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


def _stored(node: LoopbackNode, pk: str) -> bytes | None:
    row = node.local.meta.db.execute("SELECT value FROM objects WHERE pk = ?", (pk,)).fetchone()
    return None if row is None else bytes(row[0])


def _rot(node: LoopbackNode, pk: str, fill: int) -> None:
    """Overwrite the inline body in ``node``'s stored row (the node's row cache let go)."""
    raw = _stored(node, pk)
    assert raw is not None and BODY in raw
    cut = raw.index(BODY) + 1
    bad = raw[:cut] + bytes([fill]) * (len(raw) - cut)
    node.local.meta.db.execute("UPDATE objects SET value = ? WHERE pk = ?", (bad, pk))
    node.local.meta.forget(OBJECTS, pk)


async def test_a_rotten_inline_row_is_served_right_mended_and_never_spread(
    tmp_path: Path,
) -> None:
    roles = {f"n{i}": NodeRole(f"z{i}", 10**9) for i in range(1, 4)}
    c = await LoopbackCluster(tmp_path, roles, replication=3).start()
    try:
        data = os.urandom(4096)
        pk = object_pk("b", "k")
        await c.engine("n1").put("b", "k", body(data), content_type="x", user_meta={})
        for _ in range(500):  # the PUT returned at a write quorum: a copy may be on the way
            if all(_stored(n, pk) is not None for n in c.nodes.values()):
                break
            await asyncio.sleep(0.02)
        good = _stored(c.nodes["n1"], pk)
        assert good is not None and intact(good)
        # 0xff sorts above any body: by bytes alone the rotten copy would win the merge
        for fill in (0xFF, 0x00):
            _rot(c.nodes["n2"], pk, fill)
            for reader in ("n2", "n1", "n3", "n2"):
                obj = await c.engine(reader).head("b", "k")
                assert obj is not None
                assert await c.engine(reader).read_whole(obj, 0, obj.size) == data
            assert all(_stored(n, pk) == good for n in c.nodes.values()), "mended, not spread"
        # the scrub finds and mends a rotten row on a node nobody reads from
        n3 = c.nodes["n3"]
        assert n3.cluster is not None
        _rot(n3, pk, 0xFF)
        table = n3.cluster.table(OBJECTS)
        scrub = Scrubber(
            n3.local.blocks,
            c.clock,
            bytes_per_second=0,
            objects=n3.local.raw(OBJECTS),
            repair_row=table.mend_local,
        )
        report = await scrub.scrub_once()
        assert (report.rows, report.corrupt_rows, report.repaired_rows) == (1, [pk], [pk])
        assert all(_stored(n, pk) == good for n in c.nodes.values())
        # the mended nodes' hash trees agree with their rows: nothing left for anti-entropy
        for n in c.nodes.values():
            kept = sorted(n.local.meta.db.execute("SELECT * FROM merkle WHERE tbl = 'objects'"))
            n.local.meta.rebuild_trees(OBJECTS)
            assert (
                sorted(n.local.meta.db.execute("SELECT * FROM merkle WHERE tbl = 'objects'"))
                == kept
            )
        assert (await scrub.scrub_once()).corrupt_rows == []
    finally:
        await c.close()
