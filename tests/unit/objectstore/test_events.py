"""The object store's events (``objectstore/events.py``): what changes in the registrations
and the layout history say, as tables; the leader's loop on a memory store says each once
and nothing of what it found at start."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore import history as h
from cloudless.objectstore import lifecycle
from cloudless.objectstore.events import (
    KIND,
    StoreEvents,
    bucket_events,
    layout_events,
    node_events,
)
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.layout_store import LAYOUT, LayoutStore
from cloudless.objectstore.members import NODES, StorageNode
from cloudless.objectstore.s3 import cors
from cloudless.objectstore.s3.iam import BUCKETS, Bucket
from cloudless.store.memory import MemoryStore

GIB = 1 << 30
N = StorageNode("n1", "home", 100 * GIB, "https://a:1", "http://a:2", beat=1)
FULL = replace(N, refusing_writes=True, disk_free=GIB // 2, disk_size=100 * GIB)

NODE_CASES = [
    # (before, after, what is said)
    ({}, {"n1": N}, ["object store node n1 registered: zone home, 100.0 GiB offered"]),
    ({}, {"n1": replace(N, capacity=0)}, ["object store node n1 registered: zone home, gateway"]),
    ({"n1": N}, {"n1": replace(N, beat=9, disk_free=5)}, []),  # a beat says nothing
    ({"n1": N}, {"n1": replace(N, zone="office")},
     ["object store node n1 now zone office, 100.0 GiB offered"]),
    ({"n1": N}, {"n1": FULL},
     ["object store node n1: disk full (0.5 GiB of 100.0 GiB free), refusing writes"]),
    ({"n1": N}, {"n1": replace(N, refusing_writes=True)},  # no disk figures reported
     ["object store node n1: disk full, refusing writes"]),
    ({"n1": FULL}, {"n1": replace(FULL, beat=5)}, []),  # still full: said once
    ({"n1": FULL}, {"n1": N}, ["object store node n1: disk has room again, taking writes"]),
    ({"n1": N}, {}, []),  # a registration removed: the layout says what matters
]  # fmt: skip


@pytest.mark.parametrize(("before", "after", "said"), NODE_CASES)
def test_node_events(
    before: dict[str, StorageNode], after: dict[str, StorageNode], said: list[str]
) -> None:
    got = node_events(before, after)
    assert [s.message for s in got] == said
    assert all(s.node == "n1" for s in got)


def roles(*names: str) -> dict[str, NodeRole]:
    return {n: NodeRole(f"z{i}", 10 * GIB) for i, n in enumerate(names)}


def staged(hist: h.LayoutHistory, new: dict[str, NodeRole]) -> h.LayoutHistory:
    for n, r in new.items():
        hist = h.stage(hist, n, r)
    return hist


V1 = h.apply(staged(h.stage_replication(h.LayoutHistory(), 3), roles("a", "b", "c")), 0)[0]
V2 = h.apply(staged(V1, {"d": NodeRole("z0", 10 * GIB)}), 1)[0]
DONE = replace(V2, versions=V2.versions[-1:])


def test_layout_events() -> None:
    assert [s.message for s in layout_events(h.LayoutHistory(), V1)] == [
        "object store layout v1 (R=3): +a, +b, +c; first layout"
    ]
    [said] = layout_events(V1, V2)
    moved = sum(
        len(set(p) - set(q))
        for p, q in zip(V2.versions[-1].partitions, V1.versions[-1].partitions, strict=True)
    )
    assert said.message == f"object store layout v2 (R=3): +d; {moved} partition copies move"
    assert 0 < moved < 256 * 3  # a minimal move, never everything
    assert [s.message for s in layout_events(V2, DONE)] == [
        "object store layout v2 in force: every node synced it"
    ]
    assert layout_events(V2, V2) == [] and layout_events(DONE, DONE) == []


B = Bucket("photos", 0.0, "k1", {"k1": "owner"})
RULES = lifecycle.encode((lifecycle.Rule("old", True, expire_days=30),))
CORS = cors.encode((cors.CorsRule(("*",), ("GET",)),))

BUCKET_CASES = [
    # (before, after, what is said)
    (B, replace(B, public_read=True),
     ["s3 bucket photos is now public-read: anyone may list it and read its objects, unsigned"]),
    (replace(B, public_read=True), B, ["s3 bucket photos is private again"]),
    (B, replace(B, lifecycle=RULES), ["s3 bucket photos: lifecycle rules set (1)"]),
    (replace(B, lifecycle=RULES), B, ["s3 bucket photos: lifecycle rules removed"]),
    (B, replace(B, cors=CORS), ["s3 bucket photos: CORS rules set (1)"]),
    (B, replace(B, allow={"k1": "owner", "k2": "read"}), []),  # grants are the API's events
]  # fmt: skip


@pytest.mark.parametrize(("before", "after", "said"), BUCKET_CASES)
def test_bucket_events(before: Bucket, after: Bucket, said: list[str]) -> None:
    got = bucket_events({"photos": before}, {"photos": after})
    assert [s.message for s in got] == said
    assert bucket_events({}, {"photos": after}) == []  # creation: the API's own event


async def test_the_leader_loop_says_each_change_once_and_not_its_baseline() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    told: list[tuple[str, str, dict[str, str]]] = []

    async def emit(kind: str, message: str, fields: dict[str, str]) -> None:
        told.append((kind, message, fields))

    nodes = NODES.bind(store)
    await nodes.put("n1", N)
    await BUCKETS.bind(store).put("photos", B)
    ev = StoreEvents(store, emit, clock)
    assert await ev.once() == []  # the baseline: n1 was there before this leader
    await nodes.put("n1", FULL)
    await LayoutStore(store).table.put(LAYOUT, V1)
    await BUCKETS.bind(store).put("photos", replace(B, public_read=True))
    assert [s.message for s in await ev.once()] == [
        "object store node n1: disk full (0.5 GiB of 100.0 GiB free), refusing writes",
        "object store layout v1 (R=3): +a, +b, +c; first layout",
        "s3 bucket photos is now public-read: anyone may list it and read its objects, unsigned",
    ]
    assert await ev.once() == []
    assert told[0] == (KIND, told[0][1], {"node": "n1"}) and told[1][2] == {}
