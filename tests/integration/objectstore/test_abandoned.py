"""Versions a writer left behind (``Engine.settle_putting``), on three loopback nodes at R=3:
a gateway that dies mid-upload (simulated: its clean-up never runs) leaves block references
that no object names; once its ``putting`` row is a day old, the partition's acting node
releases them on every replica, and leaves committed, copied and young versions alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.blocks import BLOCK_SIZE, block_hash
from cloudless.objectstore.engine import MAX_PUT_S, ORPHAN_AFTER_S, Engine
from cloudless.objectstore.records import PUTTING, partition
from cloudless.objectstore.replication import ReplicatedBlocks
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.testing import LoopbackCluster
from tests.integration.objectstore.conftest import body


class Died(Exception):
    """The writer's process is gone (kill -9, power cut): nothing after this runs."""


def hashes(data: bytes) -> list[str]:
    return [block_hash(data[i : i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE)]


def refs(cluster: LoopbackCluster, h: str) -> list[int]:
    """Live references to block ``h`` on each node."""
    return [n.local.blocks.refcount(h) for n in cluster.nodes.values()]


def live_putting(cluster: LoopbackCluster) -> list[str]:
    """The versions n1's copy of the ``putting`` table holds as under way."""
    return [pk for pk, e in cluster.nodes["n1"].local.raw(PUTTING).range("") if e.value]


async def dies_after(cluster: LoopbackCluster, data: bytes, n: int) -> AsyncIterator[bytes]:
    """The body's first ``n`` bytes; once their whole blocks are on every replica, the
    writer dies."""
    yield data[:n]
    for _ in range(500):
        if all(refs(cluster, h) == [1, 1, 1] for h in hashes(data[:n])[: n // BLOCK_SIZE]):
            raise Died()
        await asyncio.sleep(0.01)
    raise AssertionError("the first blocks never reached every replica")


def dying(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean-up a live writer does on an error (dropping its references) never runs."""

    async def nothing(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(engine, "_ref", nothing)


async def test_a_dead_writers_blocks_are_released_after_a_day(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    e1 = cluster.engine("n1")
    kept = os.urandom(2_500_000)
    await e1.put("b", "kept", body(kept), content_type="x", user_meta={})  # committed
    one = os.urandom(600_000)  # one block: its only list would have been the object row
    big = os.urandom(3 * BLOCK_SIZE + 5)
    n1 = cluster.nodes["n1"].cluster
    assert n1 is not None
    doomed = Engine(n1, ReplicatedBlocks(n1), cluster.clock)
    dying(doomed, monkeypatch)

    async def died_before_commit(*args: object) -> None:
        raise Died()

    monkeypatch.setattr(doomed, "_commit", died_before_commit)
    with pytest.raises(Died):
        await doomed.put("b", "one", body(one), content_type="x", user_meta={})
    with pytest.raises(Died):
        await doomed.put("b", "big", dies_after(cluster, big, 2 * BLOCK_SIZE + 7), content_type="x",
                         user_meta={})  # fmt: skip
    orphans = [*hashes(one), *hashes(big)[:2]]
    for h in orphans:
        assert refs(cluster, h) == [1, 1, 1], "the dead writer's references stay"
    assert len(live_putting(cluster)) == 3  # kept, one, big

    now = cluster.clock.now()
    e2 = cluster.engine("n2")
    p = partition("b")
    # young rows (a writer may still be at work): nothing happens
    assert await e2.settle_putting(p, now, older_than=ORPHAN_AFTER_S, limit=100) == (0, 0, 3)
    later = now + ORPHAN_AFTER_S + 1
    assert await e2.settle_putting(p, later, older_than=ORPHAN_AFTER_S, limit=100) == (1, 2, 0)
    for h in orphans:
        assert refs(cluster, h) == [0, 0, 0], "released on every replica"
    for h in hashes(kept):
        assert refs(cluster, h) == [1, 1, 1]
    assert live_putting(cluster) == []
    obj = await e2.head("b", "kept")
    assert obj is not None and await e2.read_whole(obj, 0, obj.size) == kept
    assert await e2.head("b", "one") is None and await e2.head("b", "big") is None
    # settled rows are gone: a second sweep has nothing to do
    assert await e2.settle_putting(p, later, older_than=ORPHAN_AFTER_S, limit=100) == (0, 0, 0)


async def test_copies_and_overwrites_are_settled_without_losing_anything(
    cluster: LoopbackCluster,
) -> None:
    e1 = cluster.engine("n1")
    first, second = os.urandom(1_200_000), os.urandom(1_200_000)
    await e1.put("b", "k", body(first), content_type="x", user_meta={})
    src = await e1.head("b", "k")
    assert src is not None
    await e1.copy(src, "b", "copy", content_type="x", user_meta={})
    await e1.put("b", "k", body(second), content_type="x", user_meta={})  # supersedes first
    later = cluster.clock.now() + ORPHAN_AFTER_S + 1
    done = await e1.settle_putting(partition("b"), later, older_than=ORPHAN_AFTER_S, limit=100)
    # the copy and the second version are current; the first was superseded (and released by
    # the overwrite already: released again, harmlessly, as the copy holds its own references)
    assert done == (2, 1, 0)
    for key, data in (("k", second), ("copy", first)):
        obj = await e1.head("b", key)
        assert obj is not None and await e1.read_whole(obj, 0, obj.size) == data
    for h in hashes(first):
        assert refs(cluster, h) == [1, 1, 1], "the copy's references"


async def test_a_put_slower_than_the_limit_is_refused_before_its_commit(
    cluster: LoopbackCluster,
) -> None:
    clock = FakeClock(start=cluster.clock.now())
    node = cluster.nodes["n1"].cluster
    assert node is not None
    slow = Engine(node, ReplicatedBlocks(node), clock)
    data = os.urandom(2 * BLOCK_SIZE)

    async def crawls() -> AsyncIterator[bytes]:
        yield data[:BLOCK_SIZE]
        clock.advance(MAX_PUT_S + 1)
        yield data[BLOCK_SIZE:]

    with pytest.raises(S3Error) as e:
        await slow.put("b", "slow", crawls(), content_type="x", user_meta={})
    assert e.value.code == "RequestTimeout" and "12 h" in e.value.message
    assert await slow.head("b", "slow") is None
    assert len(live_putting(cluster)) == 1  # settled (released) a day later


async def test_multipart_attempts_and_completions_are_settled(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part attempt whose writer died (no part row names it) is released; registered
    attempts and the completed object are kept; a completion never links a part whose data
    was released."""
    e1 = cluster.engine("n1")
    e1.min_part_size = 1  # parts of any size
    up = await e1.create_upload("b", "mp", content_type="x", user_meta={})
    p1, p2 = os.urandom(1_100_000), os.urandom(300_000)
    done1 = await e1.upload_part("b", "mp", up, 1, body(p1))
    n1 = cluster.nodes["n1"].cluster
    assert n1 is not None
    doomed = Engine(n1, ReplicatedBlocks(n1), cluster.clock)
    dying(doomed, monkeypatch)
    lost = os.urandom(2 * BLOCK_SIZE + 3)
    with pytest.raises(Died):
        await doomed.upload_part("b", "mp", up, 2, dies_after(cluster, lost, 2 * BLOCK_SIZE + 1))
    done2 = await e1.upload_part("b", "mp", up, 2, body(p2))  # the client's retry elsewhere
    obj = await e1.complete("b", "mp", up, [(1, done1.etag), (2, done2.etag)])
    later = cluster.clock.now() + ORPHAN_AFTER_S + 1
    got = await e1.settle_putting(partition("b"), later, older_than=ORPHAN_AFTER_S, limit=100)
    assert got == (3, 1, 0)  # two registered attempts and the completion; the dead attempt
    for h in hashes(lost)[:2]:
        assert refs(cluster, h) == [0, 0, 0]
    head = await e1.head("b", "mp")
    assert head is not None and head.version == obj.version
    assert await e1.read_whole(head, 0, head.size) == p1 + p2

    # a part whose attempt was released (as the sweep does to one no part row named when it
    # looked) is refused by a completion, never linked short
    up2 = await e1.create_upload("b", "mp2", content_type="x", user_meta={})
    q1 = await e1.upload_part("b", "mp2", up2, 1, body(p1))
    await e1._release(q1.version)
    with pytest.raises(S3Error) as e:
        await e1.complete("b", "mp2", up2, [(1, q1.etag)])
    assert e.value.code == "InvalidPart" and "0 of its 1100000 bytes" in e.value.message


async def test_a_node_from_before_the_putting_table_still_takes_the_blocks(
    cluster: LoopbackCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a rolling upgrade a node of the seventh session refuses a batch naming the
    ``putting`` table, as it refuses any table it does not know: it gets the batch again
    without that row, so a PUT with blocks goes on through it."""
    old = cluster.nodes["n3"].local
    knows = old.replicated

    def seventh(name: object) -> Any:
        if name == PUTTING:
            raise ValueError(f"table {name!r} is not replicated between nodes")
        return knows(name)

    monkeypatch.setattr(old, "replicated", seventh)
    e1 = cluster.engine("n1")
    for key, size in (("one", 600_000), ("two", 2 * BLOCK_SIZE + 9)):
        data = os.urandom(size)
        await e1.put("b", key, body(data), content_type="x", user_meta={})
        obj = await cluster.engine("n3").head("b", key)
        assert obj is not None and await cluster.engine("n3").read_whole(obj, 0, size) == data
        for h in hashes(data):  # the old node holds the block and its ref (its call may
            for _ in range(500):  # still be going on after the write quorum answered)
                if refs(cluster, h) == [1, 1, 1]:
                    break
                await asyncio.sleep(0.01)
            assert refs(cluster, h) == [1, 1, 1]
    assert len(live_putting(cluster)) == 2  # the new nodes keep the trace
    assert [pk for pk, e in old.raw(PUTTING).range("") if e.value] == []
