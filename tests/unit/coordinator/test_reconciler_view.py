"""The reconciler over its ``LiveView`` (``MemoryStore``, fake placer, fake clock): rounds read
nothing from the store, and the round after a write, or after losing a race, decides from a
view that includes it even when the watch lags behind."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cloudless.coordinator.deciders.reconcile import CreateReplica
from cloudless.coordinator.loops.reconcile_loop import Reconciler
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.live_view import LiveView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import FakeClock
from cloudless.lib.ids import SequentialIds
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.store.fence import NO_FENCE
from cloudless.testing.fake_placer import FakePlacer
from tests.unit.coordinator.link_store import TestStore

BIG = Resources(4000, 8 << 30, 100 << 30, 10**9)


async def cluster(nodes: int = 3, replicas: int = 3) -> tuple[FakeClock, TestStore, ClusterState]:
    clock = FakeClock()
    store = TestStore(clock)
    st = ClusterState(store)
    for i in range(nodes):
        n = Node.make(f"n{i}", state=NodeState.READY, allocatable=BIG, capacity=BIG)
        await st.nodes.put(n.id, n)
    spec = WorkloadSpec(name="web", image="busybox", replicas=replicas, resources=Resources(100))
    await st.workloads.put("web", WorkloadRecord(spec=spec))
    return clock, store, st


def reconciler(st: ClusterState, clock: FakeClock, **kw: object) -> Reconciler:
    return Reconciler(st, FakePlacer(), SequentialIds(), clock, **kw)  # type: ignore[arg-type]


async def replicas_of(st: ClusterState) -> list[Replica]:
    return [r.value for r in (await st.replicas.list()).records]


@contextlib.asynccontextmanager
async def with_view(rec: Reconciler) -> AsyncIterator[LiveView]:
    """Give ``rec`` a running view without its loop, so the test calls ``round`` itself."""
    view = LiveView(rec.state, rec.clock)
    rec.view = view
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(view.run())
        try:
            async with asyncio.timeout(5):
                assert await view.caught_up(1, within=3600)
            yield view
        finally:
            task.cancel()
            rec.view = None


@pytest.mark.parametrize(
    ("incremental", "lists_per_round"),
    [
        (True, 0),  # one listing of 3 tables when leading starts, then none
        (False, 3),  # the old path lists nodes, workloads and replicas every round
    ],
)
async def test_rounds_read_the_view_not_the_store(incremental: bool, lists_per_round: int) -> None:
    clock, store, st = await cluster()
    rec = reconciler(st, clock, incremental=incremental)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(rec.lead(NO_FENCE))
        await clock.run_for(5.0, step=0.01)  # period 1 s: a round a second at least
        task.cancel()
    assert len(await replicas_of(st)) == 3
    assert rec.rounds >= 5
    first = 3 if incremental else 1  # old path: the node watch seeds its fingerprints
    assert store.lists - 1 == first + lists_per_round * rec.rounds  # -1: our replicas() above


async def test_next_round_sees_its_own_writes_when_the_watch_lags() -> None:
    clock, store, st = await cluster()
    rec = reconciler(st, clock, catch_up_s=2.0)
    async with with_view(rec) as view:
        store.released.clear()  # the watch delivers nothing from here on
        first = await rec.round(NO_FENCE)
        assert sum(isinstance(a, CreateReplica) for a in first) == 3
        second = asyncio.create_task(rec.round(NO_FENCE))
        await clock.run_for(1.9, step=0.1)
        assert not second.done()  # waiting for the view to reach the store's revision
        await clock.run_for(0.2, step=0.1)  # 2.0 s passed: it re-lists instead
        assert await second == []  # not 3 more replicas
        assert view.relists == 2
        store.released.set()
    assert len(await replicas_of(st)) == 3


@pytest.mark.parametrize(
    ("replicas", "ours"),
    [
        # web-1 lost; web-2 and web-3 written after the winner: waiting for our own last
        # write already covers it.
        (3, {"web-2": "n1", "web-3": "n2"}),
        # The only write lost: nothing of ours to wait for, so the round reads the store's
        # revision (else it would decide from the stale view and place a duplicate).
        (1, {}),
    ],
)
async def test_the_round_after_a_lost_race_sees_the_winner(
    replicas: int, ours: dict[str, str]
) -> None:
    clock, store, st = await cluster(replicas=replicas)
    rec = reconciler(st, clock)
    async with with_view(rec) as view:
        store.released.clear()
        # Someone else takes the key this round will pick first (SequentialIds: web-1).
        await st.replicas.put("web/web-1", Replica(id="web-1", workload="web", node_id="n2"))
        first = await rec.round(NO_FENCE)  # decided without seeing it: web-1.. on n0..
        assert [a.replica.id for a in first if isinstance(a, CreateReplica)] == [
            f"web-{i + 1}" for i in range(replicas)
        ]
        after_first = await store.revision()
        store.released.set()  # the watch now catches up; the next round waits for it
        second = await rec.round(NO_FENCE)
        assert view.revision >= after_first and view.relists == 1
        assert not [a for a in second if isinstance(a, CreateReplica)]
    got = {r.id: r.node_id for r in await replicas_of(st)}
    assert got == {"web-1": "n2", **ours}  # the race winner kept, no duplicate


async def test_a_round_when_not_leading_lists_the_store() -> None:
    clock, store, st = await cluster()
    rec = reconciler(st, clock)
    actions = await rec.round(NO_FENCE)
    assert sum(isinstance(a, CreateReplica) for a in actions) == 3
    assert store.lists == 3 and rec.view is None


class SlowView:
    """A view whose watch advances ``step`` revisions per wait of ``catch_up_s``."""

    def __init__(self, step: int) -> None:
        self.revision, self.step, self.waits, self.relists = 10, step, 0, 0

    async def caught_up(self, revision: int, within: float) -> bool:
        self.waits += 1
        self.revision += self.step
        return self.revision >= revision

    async def reload(self) -> None:
        self.relists += 1

    def snapshot(self) -> str:
        return "snapshot"


@pytest.mark.parametrize(
    ("step", "waits", "relists"),
    [
        # need 13 from 10: +1 per 2 s wait -> caught up on the 3rd wait (6 s < 10 s), no relist
        (1, 3, 0),
        # nothing delivered in the first 2 s: the watch is stuck, re-list at once
        (0, 1, 1),
    ],
)
async def test_a_late_but_delivering_view_is_waited_for_a_stuck_one_relisted(
    step: int, waits: int, relists: int
) -> None:
    clock, _, st = await cluster()
    rec = reconciler(st, clock, catch_up_s=2.0)
    view = SlowView(step)
    rec.view = view  # type: ignore[assignment]
    rec._saw(13)
    assert await rec.snapshot() == "snapshot"  # type: ignore[comparison-overlap]
    assert (view.waits, view.relists) == (waits, relists)
