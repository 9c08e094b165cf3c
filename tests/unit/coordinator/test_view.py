"""``LiveView`` against ``MemoryStore``: after every change it equals a fresh store listing
(``ClusterState.snapshot``) at the same revision, including deletes, undecodable records,
multi-key transactions, a lost watch and a compacted resume point."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.coordinator.state.live_view import LiveView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Put
from tests.unit.coordinator.link_store import TestStore

BIG = Resources(4000, 8 << 30, 100 << 30, 10**9)


def node(i: int, zone: str = "", **kw: object) -> Node:
    return Node.make(
        f"n{i}",
        state=NodeState.READY,
        allocatable=BIG,
        capacity=BIG,
        zone=zone or f"z{i % 3}",
        **kw,
    )


def workload(name: str = "web", replicas: int = 2) -> WorkloadRecord:
    spec = WorkloadSpec(name=name, image="busybox", replicas=replicas, resources=Resources(100))
    return WorkloadRecord(spec=spec)


def rep(i: int, node_id: str = "n0", **kw: object) -> Replica:
    return Replica(id=f"web-r{i}", workload="web", node_id=node_id, **kw)  # type: ignore[arg-type]


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


@contextlib.asynccontextmanager
async def running(view: LiveView) -> AsyncIterator[LiveView]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(view.run())
        try:
            yield view
        finally:
            task.cancel()


async def settle(view: LiveView, store: MemoryStore) -> None:
    """Wait (bounded, in real time) until the view reflects the store's revision."""
    async with asyncio.timeout(5):
        assert await view.caught_up(await store.revision(), within=3600)


async def assert_same(view: LiveView, st: ClusterState) -> None:
    store = st.store
    assert isinstance(store, TestStore)
    counted = store.lists
    want = await st.snapshot()
    store.lists = counted  # the reference listing is not the view's
    got = view.snapshot()
    assert got.revision == want.revision
    assert got.view == want.view
    assert got.problems == want.problems


Step = Callable[[ClusterState], Awaitable[object]]


def raw(key: str, value: bytes) -> Step:
    return lambda st: st.store.put(key, value)


# (what happens, the write, whether it wakes the reconciler)
STEPS: list[tuple[str, Step, bool]] = [
    ("a node joins", lambda st: st.nodes.put("n1", node(1)), True),
    (
        "usage refresh: applied, but no wake-up (fingerprint unchanged)",
        lambda st: st.nodes.put("n1", replace(node(1), usage=Resources(250), last_heartbeat=9.0)),
        False,
    ),
    (
        "the node goes offline: a wake-up",
        lambda st: st.nodes.put("n1", replace(node(1), state=NodeState.OFFLINE)),
        True,
    ),
    ("a workload is created", lambda st: st.workloads.put("web", workload()), True),
    ("a replica is created", lambda st: st.replicas.put("web/web-r1", rep(1)), True),
    (
        "the replica reports running",
        lambda st: st.replicas.put("web/web-r1", rep(1, observed=ReplicaState.RUNNING)),
        True,
    ),
    (
        "an event record: outside the view, revision still advances",
        lambda st: st.events.put(*event("test", "hello", 1.0)),
        False,
    ),
    (
        "three replicas and their events in one transaction",
        lambda st: st.store.txn(
            [],
            [
                *(st.replicas.put_op(f"web/web-r{i}", rep(i, f"n{i}")) for i in (2, 3, 4)),
                *(Put(f"/cloudless/events/{i}", b"{}") for i in (2, 3, 4)),
            ],
        ),
        True,
    ),
    ("a replica that does not decode", raw("/cloudless/replicas/web/web-r2", b"{oops"), True),
    ("a node that does not decode", raw("/cloudless/nodes/n9", b"[]"), True),
    ("the replica is fixed", lambda st: st.replicas.put("web/web-r2", rep(2, "n2")), True),
    ("the bad node is deleted", lambda st: st.nodes.delete("n9"), True),
    ("a replica is deleted", lambda st: st.replicas.delete("web/web-r3"), True),
    ("the workload is deleted", lambda st: st.workloads.delete("web"), True),
    ("the node is deleted", lambda st: st.nodes.delete("n1"), True),
    (
        "prefix delete of every replica",
        lambda st: st.store.delete("/cloudless/replicas/", prefix=True),
        True,
    ),
]


async def test_view_equals_a_fresh_listing_after_every_change() -> None:
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    await st.nodes.put("n0", node(0))  # before the view starts: comes from the listing
    wakes = Counter()
    async with running(LiveView(st, clock, on_change=wakes)) as view:
        await settle(view, store)
        await assert_same(view, st)
        assert view.relists == 1 and store.lists == 3  # one listing of three tables
        for what, write, wakes_up in STEPS:
            before = wakes.n
            await write(st)
            await settle(view, store)
            await assert_same(view, st)
            assert (wakes.n > before) is wakes_up, what
        assert store.lists == 3  # no change above cost a store read
        assert view.snapshot().view.nodes.keys() == {"n0"}


async def test_snapshot_is_a_copy() -> None:
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    async with running(LiveView(st, clock)) as view:
        await settle(view, store)
        snap = view.snapshot()
        await st.nodes.put("n1", node(1))
        await settle(view, store)
        assert snap.view.nodes == {} and snap.revision < view.revision
        assert set(view.snapshot().view.nodes) == {"n1"}


@pytest.mark.parametrize(
    ("compact", "relists"),
    [
        (False, 1),  # resume from revision + 1: the store replays what was missed
        (True, 2),  # history is gone: Compacted, so the view re-lists
    ],
)
async def test_a_lost_watch_resumes_or_relists(compact: bool, relists: int) -> None:
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    await st.nodes.put("n0", node(0))
    async with running(LiveView(st, clock)) as view:
        await settle(view, store)
        stale = view.revision
        store.down = True
        await st.nodes.put("n1", node(1))  # writes still work; only reads are cut
        for _ in range(5):
            await asyncio.sleep(0)  # the watch breaks at this batch and backs off
        await st.nodes.put("n0", node(0, zone="zx"))
        await st.nodes.delete("n1")
        await st.replicas.put("web/web-r1", rep(1))
        if compact:
            await store.compact(await store.revision())
        await clock.run_for(3, step=0.1)  # still down: attempts fail and back off
        assert view.revision == stale  # the view knows it is behind
        store.down = False
        await clock.run_for(3, step=0.1)  # backoff cap is 2 s
        await settle(view, store)
        await assert_same(view, st)
        assert view.relists == relists


async def test_changes_during_a_relisting_are_kept() -> None:
    """A node changes after the node table was listed but before the replica table was:
    the listing (at the node listing's revision) misses it, the watch delivers it while the
    listing is in flight, and it must be applied on top of the new contents."""
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    await st.nodes.put("n0", node(0))
    async with running(LiveView(st, clock)) as view:
        await settle(view, store)

        async def meanwhile(prefix: str) -> None:
            if prefix == st.replicas.prefix:
                await st.nodes.put("n0", node(0, zone="zq"))
                for _ in range(5):
                    await asyncio.sleep(0)  # the watch applies it to the old contents

        store.during_list = meanwhile
        await view.reload()
        store.during_list = None
        await settle(view, store)
        await assert_same(view, st)
        assert view.snapshot().view.nodes["n0"].zone == "zq"


async def test_caught_up_times_out_on_the_clock() -> None:
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    async with running(LiveView(st, clock)) as view:
        await settle(view, store)
        store.released.clear()  # hold every watch batch back
        await st.nodes.put("n1", node(1))
        want = await store.revision()
        waiting = asyncio.create_task(view.caught_up(want, within=2.0))
        await clock.run_for(1.9, step=0.1)
        assert not waiting.done()
        await clock.run_for(0.2, step=0.1)
        assert await waiting is False
        store.released.set()
        await settle(view, store)
        assert view.revision == want
