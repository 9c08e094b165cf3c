"""The replicated PUT path on three loopback nodes (R=3, mutual TLS): how many rounds of
node-to-node calls a PUT waits for, and that overwrites, concurrent ones included, release
exactly the versions they superseded (learned from the replicas' merge answers, no
read-back)."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cloudless.objectstore.blocks import INLINE_MAX, block_hash
from cloudless.objectstore.rpc import Peer
from cloudless.objectstore.testing import LoopbackCluster
from tests.integration.objectstore.conftest import body


class Slow:
    """Every call n1 makes to its peers takes ``delay`` longer, so a PUT's time counts the
    rounds of calls it waits for one after the other (calls in flight together, or
    overlapping local work, cost one delay)."""

    def __init__(self, peers: dict[str, Peer], delay: float) -> None:
        self.delay = delay
        self.calls = 0
        for peer in peers.values():
            for kind in ("batch", "merge", "entry", "range", "put_block", "get_block"):
                setattr(peer, kind, self._slowed(getattr(peer, kind)))

    def _slowed(self, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            await asyncio.sleep(self.delay)
            return await inner(*args, **kwargs)

        return call

    async def rounds(self, work: Awaitable[Any]) -> float:
        """How many delays ``work`` took (its own time over the delay)."""
        t = time.perf_counter()
        await work
        return (time.perf_counter() - t) / self.delay


async def settled(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (on the loop) for the background replica calls to land."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


DELAY = 1.0
ROUNDS = [
    # (object size, rounds of calls a PUT of a new key waits for, calls to each peer)
    (100, 2, 2),  # inline: read the key's row | write it
    (INLINE_MAX, 2, 2),  # the largest inline body: the same
    (INLINE_MAX + 1, 2, 2),  # a block: one call {block, its reference, read} | write
    (1 << 20, 2, 2),  # one 1 MiB block: the same
    ((1 << 20) + 1, 2, 4),  # two blocks (a call each) and the read, at once | write
]


async def test_a_put_waits_for_two_rounds_of_calls(cluster: LoopbackCluster) -> None:
    n1 = cluster.nodes["n1"].cluster
    assert n1 is not None
    slow = Slow(n1.peers, DELAY)
    e = cluster.engine("n1")
    for size, want, calls in ROUNDS:
        data = os.urandom(size)
        slow.calls = 0
        took = await slow.rounds(e.put("b", f"k{size}", body(data), content_type="x", user_meta={}))
        # want delays plus the PUT's own work, three nodes' in one process (< 700 ms)
        assert want <= took < want + 0.7, (size, took)
        await settled(lambda calls=calls: slow.calls == 2 * calls)  # the third replica's too
        await asyncio.sleep(0.1)
        assert slow.calls == 2 * calls, (size, slow.calls)


def _refs(cluster: LoopbackCluster, h: str) -> list[int]:
    return [n.local.blocks.refcount(h) for n in cluster.nodes.values()]


def _refs_are(cluster: LoopbackCluster, h: str, want: list[int]) -> bool:
    return _refs(cluster, h) == want


async def test_an_overwrite_releases_the_old_version_everywhere(cluster: LoopbackCluster) -> None:
    e = cluster.engine("n1")
    old, new = os.urandom(INLINE_MAX + 1000), os.urandom(INLINE_MAX + 2000)  # blocks
    await e.put("b", "k", body(old), content_type="x", user_meta={})
    await settled(lambda: _refs(cluster, block_hash(old)) == [1, 1, 1])
    await cluster.engine("n2").put("b", "k", body(new), content_type="x", user_meta={})
    await settled(lambda: _refs(cluster, block_hash(old)) == [0, 0, 0])
    await settled(lambda: _refs(cluster, block_hash(new)) == [1, 1, 1])
    await e.delete("b", "k")
    await settled(lambda: _refs(cluster, block_hash(new)) == [0, 0, 0])


async def test_concurrent_overwrites_leave_only_the_winner_referenced(
    cluster: LoopbackCluster,
) -> None:
    # Two writers' acknowledging replicas (2 of 3 each) share one; whichever write reaches
    # it second learns about the first there (superseded it, or lost to it).
    for rnd in range(6):
        datas = [os.urandom(INLINE_MAX + 1 + i) for i in range(2)]  # blocks
        await asyncio.gather(
            *(
                cluster.engine(f"n{i + 1 + rnd % 2}").put(
                    "b", f"race{rnd}", body(d), content_type="x", user_meta={}
                )
                for i, d in enumerate(datas)
            )
        )
        meta = await cluster.engine("n1").head("b", f"race{rnd}")
        assert meta is not None
        winner = next(d for d in datas if len(d) == meta.size)
        for d in datas:
            want = [1, 1, 1] if d is winner else [0, 0, 0]
            await settled(functools.partial(_refs_are, cluster, block_hash(d), want))


async def test_a_get_of_a_small_object_waits_for_one_round(cluster: LoopbackCluster) -> None:
    data = os.urandom(3 * (1 << 20) + 5)  # 4 blocks: listed in the object row
    await cluster.engine("n1").put("b", "g", body(data), content_type="x", user_meta={})
    await asyncio.sleep(0.3)
    n2 = cluster.nodes["n2"].cluster
    assert n2 is not None
    slow = Slow(n2.peers, DELAY)
    e2 = cluster.engine("n2")

    async def get() -> None:
        meta = await e2.head("b", "g")
        assert meta is not None and meta.blocks is not None and len(meta.blocks) == 4
        assert b"".join([piece async for piece in e2.read(meta, 0, meta.size)]) == data

    # the object row from a read quorum; every block is on n2 itself (R=3 over 3 nodes)
    took = await slow.rounds(get())
    assert 1 <= took < 1.6, took


async def test_an_object_row_without_its_block_list_reads_the_version_rows(
    cluster: LoopbackCluster,
) -> None:
    from dataclasses import replace

    data = os.urandom((1 << 20) + 5000)  # two blocks: a single PUT of one writes no rows
    e1 = cluster.engine("n1")
    meta = await e1.put("b", "old", body(data), content_type="x", user_meta={})
    older = replace(meta, blocks=None)  # as a row written before block lists existed
    assert older.encode() != meta.encode()
    got = b"".join([piece async for piece in e1.read(older, 10, 4000)])
    assert got == data[10:4000]


async def test_a_one_block_put_lists_its_block_only_in_the_object_row(
    cluster: LoopbackCluster,
) -> None:
    # no version_blocks row; the embedded list alone holds, copies and releases the block
    e = cluster.engine("n1")
    data = os.urandom(INLINE_MAX + 1000)
    h = block_hash(data)
    src = await e.put("b", "src", body(data), content_type="x", user_meta={})
    assert src.blocks is not None and [b.hash for b in src.blocks] == [h]
    for n in cluster.nodes.values():
        assert n.local.raw("version_blocks").range(src.version) == []
    await settled(lambda: _refs(cluster, h) == [1, 1, 1])
    dst = await e.copy(src, "b", "dst", content_type="y", user_meta={})
    await settled(lambda: _refs(cluster, h) == [2, 2, 2])
    await e.delete("b", "src")
    await settled(lambda: _refs(cluster, h) == [1, 1, 1])
    got = await cluster.engine("n2").head("b", "dst")
    assert got is not None and got.version == dst.version
    assert b"".join([p async for p in cluster.engine("n2").read(got, 0, got.size)]) == data
    await e.put("b", "dst", body(b"x" * 4000), content_type="x", user_meta={})
    await settled(lambda: _refs(cluster, h) == [0, 0, 0])
