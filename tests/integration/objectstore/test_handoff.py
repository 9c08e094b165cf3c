"""R=2 stays writable with one owner down: hinted handoff to a fallback node, handed back
when the owner returns (three nodes on loopback, mutual TLS)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.objectstore.records import object_pk, partition
from cloudless.objectstore.testing import LoopbackCluster, running, three_zones
from tests.integration.objectstore.conftest import body


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LoopbackCluster]:
    async with running(tmp_path, three_zones(), replication=2) as c:
        yield c


async def test_r2_writes_through_an_owner_outage_and_hands_back(cluster: LoopbackCluster) -> None:
    layout = cluster.layout
    assert layout is not None
    # a bucket whose metadata partition n2 owns (the layout is deterministic)
    bucket = next(b for b in ("b", "c", "d", "e", "f") if "n2" in layout.partitions[partition(b)])
    await cluster.kill("n2")
    e1 = cluster.engine("n1")
    acked: dict[str, str] = {}
    for i in range(12):
        data = os.urandom(100 if i % 2 else 1_100_000)
        await e1.put(bucket, f"k{i}", body(data), content_type="x", user_meta={})
        acked[f"k{i}"] = hashlib.sha256(data).hexdigest()
    # n2 owns 2/3 of the partitions at R=2 over 3 nodes: some writes needed hints
    held = sum(n.hints.count() for n in cluster.nodes.values())
    assert held > 0

    await cluster.restart("n2")
    for name in ("n1", "n3"):
        handoff = cluster.nodes[name].handoff
        assert handoff is not None
        await handoff.deliver_once()
    assert sum(n.hints.count() for n in cluster.nodes.values()) == 0

    # Every owner of every acknowledged object now holds its row, n2 included.
    owners = layout.partitions[partition(bucket)]
    for key in acked:
        for owner in owners:
            row = cluster.nodes[owner].local.raw("objects").get(object_pk(bucket, key))
            assert row is not None, f"{key} missing on owner {owner}"
    # With the bucket's other owner down, n2 serves every object (metadata and blocks) it
    # missed while away.
    (other,) = [n for n in owners if n != "n2"]
    await cluster.kill(other)
    e2 = cluster.engine("n2")
    for key, digest in acked.items():
        obj = await e2.head(bucket, key)
        assert obj is not None
        data = b"".join([p async for p in e2.read(obj, 0, obj.size)])
        assert hashlib.sha256(data).hexdigest() == digest
