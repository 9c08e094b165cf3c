"""A layout transition on four loopback nodes (mutual TLS): adding n4 to a 3-node R=3 layout.
While both versions are live, writes need a quorum in each and reads use the old one; once
every node has acknowledged the new version, reads move to it and find what was written
during the transition."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore import history as h
from cloudless.objectstore.blocks import block_hash
from cloudless.objectstore.layout import LayoutVersion, NodeRole, partition_of
from cloudless.objectstore.records import object_pk, partition
from cloudless.objectstore.replication import ReplicatedBlocks
from cloudless.objectstore.resync import BlockResync
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.sync import LOST_AFTER_S, PartitionSync
from cloudless.objectstore.testing import LoopbackCluster, finished, synced
from tests.integration.objectstore.conftest import body

GB = 10**9
BUCKETS = ("b", "c", "d", "e")
ROLES = {f"n{i}": NodeRole(f"zone{i}", 100 * GB) for i in range(1, 5)}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LoopbackCluster]:
    c = await LoopbackCluster(tmp_path, ROLES, replication=3).start()
    try:
        yield c
    finally:
        await c.close()


def share(cluster: LoopbackCluster, hist: h.LayoutHistory) -> None:
    for node in cluster.nodes.values():
        assert node.cluster is not None
        node.cluster.set_history(hist)


def first_layout() -> h.LayoutHistory:
    hist = h.stage_replication(h.LayoutHistory(), 3)
    for n in ("n1", "n2", "n3"):
        hist = h.stage(hist, n, ROLES[n])
    v1, _ = h.apply(hist, 0)
    return v1


@dataclass
class Hidden:
    """n4 joins (``v2``, its version ``new``); written before: ``big`` in every bucket, one
    of whose blocks n4 gains, ``hidden``, moved off every old owner (to ``aside``)."""

    v2: h.LayoutHistory
    new: LayoutVersion
    big: bytes
    gained: list[str]
    hidden: str
    aside: dict[str, Path]


async def hide_a_gained_block(cluster: LoopbackCluster, tmp_path: Path) -> Hidden:
    v1 = first_layout()
    share(cluster, v1)
    v2, _ = h.apply(h.stage(v1, "n4", ROLES["n4"]), 1)  # pure: decided before any write
    new = v2.versions[1]

    def gained_by_n4(data: bytes) -> list[str]:
        hashes = [block_hash(data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)]
        return [x for x in hashes if "n4" in new.partitions[partition_of(bytes.fromhex(x))]]

    # three blocks, spread over partitions; n4 gains 192 of 256 partitions, so a random body
    # gives it none of its three blocks in ~1.6% of draws: draw until it gains one
    big = os.urandom(3_000_000)
    while not gained_by_n4(big):
        big = os.urandom(3_000_000)
    e1 = cluster.engine("n1")
    for b in BUCKETS:
        await e1.put(b, "small", body(b"before the transition"), content_type="x", user_meta={})
        await e1.put(b, "big", body(big), content_type="x", user_meta={})
    share(cluster, v2)
    gained = gained_by_n4(big)
    assert gained, "n4 owns the partition of at least one of the three blocks"
    hidden = gained[0]
    aside = {}
    for name in ("n1", "n2", "n3"):  # for now on no old owner
        aside[name] = tmp_path / f"{name}-{hidden}"
        shutil.move(cluster.nodes[name].local.blocks.path(hidden), aside[name])
    return Hidden(v2, new, big, gained, hidden, aside)


async def test_a_new_owner_pulls_its_partitions_before_acknowledging(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    x = await hide_a_gained_block(cluster, tmp_path)
    v2, new, big, gained, hidden, aside = x.v2, x.new, x.big, x.gained, x.hidden, x.aside
    n4 = cluster.nodes["n4"]
    assert n4.cluster is not None
    resync = BlockResync(n4.local.blocks, FakeClock(), ReplicatedBlocks(n4.cluster).read)
    sync = PartitionSync(n4.cluster, resync=resync)
    report = await sync.sync_to(new)
    # Every other partition synced. The hidden block's did not (the version must not be
    # acknowledged while one of its blocks is on no new owner); the block is queued.
    assert report.failed == (partition_of(bytes.fromhex(hidden)),)
    assert report.deferred >= 1 and [p.hash for p in resync.pending()] == [hidden]
    shutil.move(aside["n2"], cluster.nodes["n2"].local.blocks.path(hidden))
    blocks = report.blocks
    report = await sync.sync_to(new, only=report.failed)  # the next beat: the failed one
    # The retry pulls the hidden block; both passes together pull every block n4 gained (how
    # many of the three land in n4's partitions depends on the random body).
    assert report.failed == () and report.partitions == 1 and report.blocks >= 1
    assert blocks + report.blocks >= len(gained)
    for b in BUCKETS:
        if "n4" in new.partitions[partition(b)]:
            assert n4.local.raw("objects").get(object_pk(b, "small")) is not None
    for start in range(0, len(big), 1 << 20):
        hb = block_hash(big[start : start + (1 << 20)])
        if "n4" in new.partitions[partition_of(bytes.fromhex(hb))]:
            assert n4.local.blocks.has(hb)
    # acknowledged by all: reads move to v2 and find everything written before the transition
    done = finished(v2, 2, ROLES)
    share(cluster, done)
    e4 = cluster.engine("n4")
    for b in BUCKETS:
        obj = await e4.head(b, "big")
        assert obj is not None
        assert b"".join([p async for p in e4.read(obj, 0, obj.size)]) == big


async def test_a_block_no_old_owner_holds_stops_holding_the_sync_after_a_while(
    cluster: LoopbackCluster, tmp_path: Path
) -> None:
    """Every old owner says it has not got a block n4 gains: the partition waits (the block
    may be coming back) for ``LOST_AFTER_S`` on n4's clock, then syncs without it (the
    transition, and every later layout change, would wait for ever). An old owner that
    cannot be asked restarts the wait."""
    x = await hide_a_gained_block(cluster, tmp_path)
    n4 = cluster.nodes["n4"]
    assert n4.cluster is not None
    clock = FakeClock()
    resync = BlockResync(n4.local.blocks, clock, ReplicatedBlocks(n4.cluster).read)
    nowhere: dict[str, float] = {}

    def sync() -> PartitionSync:
        assert n4.cluster is not None
        return PartitionSync(n4.cluster, clock, resync=resync, nowhere=nowhere)

    hidden_p = partition_of(bytes.fromhex(x.hidden))
    report = await sync().sync_to(x.new)
    assert report.failed == (hidden_p,) and report.lost == 0
    clock.advance(LOST_AFTER_S - 1)
    report = await sync().sync_to(x.new, only=report.failed)
    assert report.failed == (hidden_p,) and report.lost == 0
    # one old owner cannot be asked: nothing is known, the wait starts again
    down = next(n for n in x.new.partitions[hidden_p] if n != "n4")
    await cluster.kill(down)
    clock.advance(10)
    report = await sync().sync_to(x.new, only=report.failed)
    assert report.failed == (hidden_p,) and report.lost == 0 and x.hidden not in nowhere
    await cluster.restart(down)
    report = await sync().sync_to(x.new, only=report.failed)  # the wait starts now
    assert report.failed == (hidden_p,)
    clock.advance(LOST_AFTER_S)
    report = await sync().sync_to(x.new, only=report.failed)
    assert report.failed == () and report.lost >= 1  # every bucket's "big" names it
    assert x.hidden in resync  # still queued: fetched if it ever comes back
    # it comes back: the queue fetches it
    shutil.move(x.aside["n1"], cluster.nodes["n1"].local.blocks.path(x.hidden))
    clock.advance(3600)
    await resync.resync_once()
    assert n4.local.blocks.has(x.hidden)


async def test_writes_need_a_quorum_in_every_live_version(cluster: LoopbackCluster) -> None:
    v1 = first_layout()
    v2, plan = h.apply(h.stage(v1, "n4", ROLES["n4"]), 1)
    share(cluster, v2)
    assert [v.version for v in v2.versions] == [1, 2]
    new = v2.versions[1]
    # a bucket whose metadata partition moves to n4 in v2 (4 zones, R=3: 192 of 256 do)
    bucket = next(b for b in ("b", "c", "d", "e", "f", "g") if "n4" in new.partitions[partition(b)])
    owners_v2 = new.partitions[partition(bucket)]

    e1 = cluster.engine("n1")
    await e1.put(bucket, "during", body(b"written mid-transition"), content_type="x", user_meta={})
    # v1 owners and v2 owners all hold it (once the calls left running after the quorum
    # acknowledged the write land)
    holders = ("n1", "n2", "n3", *owners_v2)
    deadline = time.monotonic() + 10
    while any(
        cluster.nodes[n].local.raw("objects").get(object_pk(bucket, "during")) is None
        for n in holders
    ):
        assert time.monotonic() < deadline, "not every owner got the write"
        await asyncio.sleep(0.02)

    # v1 still has a quorum (n1 + one more), v2 does not: the write is refused, naming v2
    (gone,) = [n for n in owners_v2 if n not in ("n1", "n4")][:1]
    await cluster.kill("n4")
    await cluster.kill(gone)
    with pytest.raises(S3Error) as e:
        await e1.put(bucket, "refused", body(b"x"), content_type="x", user_meta={})
    assert e.value.code == "ServiceUnavailable" and "layout v2" in e.value.message
    # reads still use v1, which has a read quorum
    assert (await e1.head(bucket, "during")) is not None

    # Every node acknowledges v2: v1 is dropped and reads move to v2's owners.
    await cluster.restart("n4")
    await cluster.restart(gone)
    done = finished(v2, 2, ROLES)
    assert [v.version for v in done.versions] == [2]
    share(cluster, done)
    # reads now ask v2's owners: with one of them (not n4) down, n4 is part of every quorum
    await cluster.kill(gone)
    obj = await cluster.engine("n4").head(bucket, "during")
    assert obj is not None and obj.inline == b"written mid-transition"
    assert len(plan.moves) > 0


async def test_a_node_whose_view_lags_still_reads_what_the_others_wrote(
    cluster: LoopbackCluster,
) -> None:
    """The store chaos run's failure: right after a transition synced, a node that had not
    refreshed its view yet read from v1's owners while the others, done with v2, wrote to
    v2's alone (v1 had been dropped once every holder synced): acknowledged objects read as
    missing. v1 now stays live, and written to, until every node reads from v2."""
    v1 = first_layout()
    v2, _ = h.apply(h.stage(v1, "n4", ROLES["n4"]), 1)
    new = v2.versions[1]
    bucket = next(b for b in "bcdefghijk" if "n4" in new.partitions[partition(b)])
    owners = new.partitions[partition(bucket)]
    dropped = next(n for n in ("n1", "n2", "n3") if n not in owners)
    p, q = sorted(n for n in owners if n != "n4")
    done = synced(v2, 2, ROLES)
    assert done.read_version() is done.current and [v.version for v in done.versions] == [1, 2]
    for name, node in cluster.nodes.items():  # n4 has not refreshed since it saw v2
        assert node.cluster is not None
        node.cluster.set_history(v2 if name == "n4" else done)

    await cluster.kill(q)  # the write's v2 quorum is {p, n4}
    await cluster.engine(dropped).put(
        bucket, "k", body(b"acknowledged"), content_type="x", user_meta={}
    )
    await cluster.restart(q)
    await cluster.kill(p)  # n4 reads from v1's owners: {q, dropped} answer
    obj = await cluster.engine("n4").head(bucket, "k")
    assert obj is not None and obj.inline == b"acknowledged"
