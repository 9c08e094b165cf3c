"""Anti-entropy, catch-up gating, tombstone GC and quorum early return on three loopback nodes
(R=3, mutual TLS)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock, SystemClock
from cloudless.objectstore.antientropy import AntiEntropy
from cloudless.objectstore.blocks import block_hash
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.records import OBJECTS, object_pk, partition
from cloudless.objectstore.replication import ReplicatedBlocks
from cloudless.objectstore.resync import BlockResync
from cloudless.objectstore.rpc import PeerError
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.sync import TABLES
from cloudless.objectstore.testing import LoopbackCluster, running
from tests.integration.objectstore.conftest import body

BUCKET = "b"


def digests(cluster: LoopbackCluster, name: str, p: int) -> list[tuple[bytes, int] | None]:
    """The partition's hash-tree root in every table (None: empty)."""
    local = cluster.nodes[name].local
    return [local.meta.tree.roots(t).get(p) for t in TABLES]


async def test_a_returning_node_catches_up_before_serving_reads(cluster: LoopbackCluster) -> None:
    e1 = cluster.engine("n1")
    await cluster.kill("n3")
    written = 0
    for i in range(6):
        data = os.urandom(100 if i % 2 else 1_100_000)
        await e1.put(BUCKET, f"k{i}", body(data), content_type="x", user_meta={})
        written += len(data)
    await cluster.restart("n3")
    n3 = cluster.nodes["n3"]
    assert n3.cluster is not None
    p = partition(BUCKET)
    assert digests(cluster, "n3", p) != digests(cluster, "n1", p)
    assert n3.local.raw(OBJECTS).get(object_pk(BUCKET, "k0")) is None

    # Catching up: n3's own (stale) copy does not count toward a read quorum, so with n1
    # down a read through n3 has only n2 and is refused rather than risking a stale answer.
    n3.cluster.serving_reads = False
    await cluster.kill("n1")
    with pytest.raises(S3Error) as e:
        await cluster.engine("n3").head(BUCKET, "k0")
    assert "catching up" in str(e.value) and e.value.code == "ServiceUnavailable"
    await cluster.restart("n1")

    report = await AntiEntropy(n3.cluster, cluster.clock).catch_up()
    # 256 partitions compared with 2 other owners each; the differing ones pulled
    assert report.partitions == 256 and report.compared == 512 and not report.unreached
    # k0, k2, k4: 1,100,000 bytes each = a 1 MiB block and a 51,424-byte block -> 6 blocks
    assert report.rows > 0 and report.blocks == 6
    # only the 3,300,300 bytes written while away, the rows naming them and the tree
    # comparisons cross (both directions): within 1.1x what was written
    assert report.block_bytes == 3_300_000 and report.traffic <= 1.1 * written
    assert n3.cluster.serving_reads
    assert digests(cluster, "n3", p) == digests(cluster, "n1", p) == digests(cluster, "n2", p)
    await cluster.kill("n1")
    meta = await cluster.engine("n3").head(BUCKET, "k0")
    assert meta is not None and meta.size == 1_100_000


async def test_tombstones_are_collected_once_every_replica_has_them(
    cluster: LoopbackCluster,
) -> None:
    e1 = cluster.engine("n1")
    for i in range(4):
        await e1.put(BUCKET, f"t{i}", body(b"x" * 50), content_type="x", user_meta={})
    await cluster.kill("n2")
    for i in range(4):
        await e1.delete(BUCKET, f"t{i}")
    await cluster.restart("n2")
    p = partition(BUCKET)
    pk = object_pk(BUCKET, "t0")
    assert cluster.nodes["n2"].local.raw(OBJECTS).entry(pk).value is not None  # type: ignore[union-attr]
    layout = cluster.layout
    assert layout is not None
    first = layout.partitions[p][0]
    node = cluster.nodes[first].cluster
    assert node is not None
    ae = AntiEntropy(node, cluster.clock, tombstone_grace=0.0)
    # n2 still holds the live rows: the first round pushes the tombstones, drops nothing
    if first != "n2":
        assert await ae.collect_tombstones() == 0
        assert cluster.nodes["n2"].local.raw(OBJECTS).entry(pk).value is None  # type: ignore[union-attr]
    await asyncio.sleep(0.01)
    assert await ae.collect_tombstones() >= 4
    for name in ("n1", "n2", "n3"):
        assert cluster.nodes[name].local.raw(OBJECTS).entry(pk) is None, name


async def test_tombstones_within_the_grace_period_stay(cluster: LoopbackCluster) -> None:
    e1 = cluster.engine("n1")
    await e1.put(BUCKET, "young", body(b"x"), content_type="x", user_meta={})
    await e1.delete(BUCKET, "young")
    p = partition(BUCKET)
    layout = cluster.layout
    assert layout is not None
    node = cluster.nodes[layout.partitions[p][0]].cluster
    assert node is not None
    assert await AntiEntropy(node, cluster.clock, tombstone_grace=3600).collect_tombstones() == 0


async def test_a_write_returns_once_a_quorum_acked(cluster: LoopbackCluster) -> None:
    # n3's address now leads to a server that accepts and never answers: without early
    # return each write would wait for the 5 s peer timeout.
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c1 = cluster.nodes["n1"].cluster
    assert c1 is not None
    c1.peers["n3"].url = f"https://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        await cluster.engine("n1").put(
            BUCKET, "fast", body(os.urandom(1_500_000)), content_type="x", user_meta={}
        )
        took = time.monotonic() - t0
        assert took < 4.0, took
        assert c1._background  # the calls to n3 still running
        meta = await cluster.engine("n2").head(BUCKET, "fast")
        assert meta is not None
    finally:
        await c1.close()
        assert not c1._background
        server.close()


class RecordingClock(SystemClock):
    """Real time, but sleeps are recorded and skipped (monotonic moves by what was slept)."""

    def __init__(self) -> None:
        self.slept = 0.0

    def monotonic(self) -> float:
        return super().monotonic() + self.slept

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds


async def test_repair_is_paced_to_the_configured_rate(cluster: LoopbackCluster) -> None:
    e1 = cluster.engine("n1")
    await cluster.kill("n3")
    data = os.urandom(3 * (1 << 20))  # three 1 MiB blocks
    await e1.put(BUCKET, "big", body(data), content_type="x", user_meta={})
    await cluster.restart("n3")
    n3 = cluster.nodes["n3"].cluster
    assert n3 is not None
    clock = RecordingClock()
    t0 = clock.monotonic()
    report = await AntiEntropy(n3, clock, repair_rate=1 << 20).round()
    # 3 MiB at 1 MiB/s: the pass lasts at least 3 s (real time plus pauses: the pull's own
    # time counts toward the budget, so the pauses alone add up to at most 3 s)
    assert report.block_bytes == 3 << 20
    assert clock.monotonic() - t0 >= 3.0 and 0 < clock.slept <= 3.0, clock.slept


async def test_a_differing_partition_is_narrowed_to_its_differing_rows(
    cluster: LoopbackCluster,
) -> None:
    e1 = cluster.engine("n1")
    for i in range(400):  # inline objects: 400 rows in the bucket's partition
        await e1.put(BUCKET, f"many/{i:04d}", body(b"x" * 300), content_type="x", user_meta={})
    deadline = time.monotonic() + 20
    while digests(cluster, "n3", partition(BUCKET)) != digests(cluster, "n1", partition(BUCKET)):
        assert time.monotonic() < deadline, "the third copies never landed"
        await asyncio.sleep(0.05)  # the background third copies land
    await cluster.kill("n3")
    await e1.put(BUCKET, "many/new", body(b"y" * 300), content_type="x", user_meta={})
    await cluster.restart("n3")
    n3 = cluster.nodes["n3"]
    assert n3.cluster is not None
    listing = sum(
        len(pk) + len(e.value or b"") for pk, e in n3.local.raw(OBJECTS).entries(partition(BUCKET))
    )
    report = await AntiEntropy(n3.cluster, cluster.clock).round()
    assert n3.local.raw(OBJECTS).get(object_pk(BUCKET, "many/new")) is not None
    assert report.differed == 1 and report.rows == 1, report  # one partition, one row
    # the one-level digest re-read the partition (over 400 rows of ~450 bytes); the walk
    # moves the roots (256 partitions x 2 peers), a few node summaries and one row
    assert report.traffic < listing / 10, (report.traffic, listing)


async def test_a_block_no_replica_serves_is_queued_and_fetched_later(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    e1 = cluster.engine("n1")
    await cluster.kill("n3")
    data = os.urandom(1_100_000)  # a 1 MiB block and a 51,424-byte block
    await e1.put(BUCKET, "two-blocks", body(data), content_type="x", user_meta={})
    await cluster.restart("n3")
    n3 = cluster.nodes["n3"]
    assert n3.cluster is not None
    tail = block_hash(data[1 << 20 :])
    # The tail block is on no replica for now (its holders lost it, or it is on its way).
    aside = {}
    for name in ("n1", "n2"):
        path = cluster.nodes[name].local.blocks.path(tail)
        aside[name] = tmp_path / f"{name}-{tail}"
        shutil.move(path, aside[name])
        cluster.nodes[name].local.blocks.forget(tail)  # nor held in its memory
    clock = FakeClock()
    resync = BlockResync(n3.local.blocks, clock, ReplicatedBlocks(n3.cluster).read)

    report = await AntiEntropy(n3.cluster, clock, resync=resync).catch_up()
    # every partition settles (the rows are all here); the head block came, the tail waits
    assert not report.unreached and n3.cluster.serving_reads
    assert report.blocks == 1 and report.deferred == 1
    assert n3.local.blocks.has(block_hash(data[: 1 << 20])) and not n3.local.blocks.has(tail)
    assert [p.hash for p in resync.pending()] == [tail]

    first = await resync.resync_once()  # due at once; still nowhere: retried in 30 s
    assert list(first.failed) == [tail] and "no replica answered" in first.failed[tail]
    (queued,) = resync.pending()
    assert queued.errors == 1 and queued.due == clock.now() + 30.0
    # the queue is a table of the node's SQLite file: a restart keeps it
    again = BlockResync(n3.local.blocks, clock, ReplicatedBlocks(n3.cluster).read)
    assert again.pending() == [queued]

    shutil.move(aside["n1"], cluster.nodes["n1"].local.blocks.path(tail))
    clock.advance(29.0)
    assert (await resync.resync_once()).fetched == []  # not due yet
    clock.advance(1.0)
    second = await resync.resync_once()
    assert second.fetched == [tail] and second.bytes == len(data) - (1 << 20)
    assert n3.local.blocks.read_sync(tail) == data[1 << 20 :] and resync.pending() == []
    meta = await cluster.engine("n3").head(BUCKET, "two-blocks")
    assert meta is not None and meta.size == len(data)

    # a block nothing references any more is dropped without a fetch
    orphan = block_hash(b"nobody refers to this")
    resync.queue(orphan, "test")
    assert (await resync.resync_once()).dropped == [orphan] and resync.pending() == []


async def test_a_returning_node_serves_the_partitions_it_caught_up_on(tmp_path: Path) -> None:
    # Four nodes in four zones at R=2: each partition has one other owner besides n4.
    roles = {f"n{i}": NodeRole(f"zone{i}", 10**11) for i in range(1, 5)}
    async with running(tmp_path, roles, replication=2) as c:
        n4 = c.nodes["n4"].cluster
        n2 = c.nodes["n2"].cluster
        assert n4 is not None and n2 is not None and c.layout is not None
        n4.serving_reads = False  # back from downtime
        await c.kill("n1")
        report = await AntiEntropy(n4, c.clock).catch_up()
        owners = c.layout.partitions
        with_n1 = {p for p in range(256) if set(owners[p]) == {"n1", "n4"}}
        with_others = {p for p in range(256) if "n4" in owners[p]} - with_n1
        # the partitions whose other owner is away stay closed; the others open now
        assert with_n1 and with_others and set(report.unreached) == with_n1
        assert not n4.serving_reads and n4.catching_up == set(range(256)) - with_others
        open_p, closed_p = min(with_others), min(with_n1)
        assert n4.readable(open_p) and not n4.readable(closed_p)
        # and so does its peer RPC, per partition named in the call
        peer = n2.peers["n4"]
        assert await peer.entry(OBJECTS, "b/k", open_p) is None  # answered: no such row
        with pytest.raises(PeerError, match="503"):
            await peer.entry(OBJECTS, "b/k", closed_p)
        await c.restart("n1")
        await AntiEntropy(n4, c.clock).catch_up()
        assert n4.serving_reads
