"""Property: whatever happens to the store (puts, deletes, undecodable records, multi-key
transactions, lost links, compaction, forced re-listings), once the view has caught up it
equals a fresh listing at the same revision."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.live_view import LiveView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.store.errors import Compacted
from cloudless.store.types import Delete, Put
from tests.unit.coordinator.link_store import TestStore

IDX = st.integers(0, 4)
STATES = st.sampled_from([NodeState.READY, NodeState.OFFLINE, NodeState.CORDONED])
OPS = st.one_of(
    st.tuples(st.just("node"), IDX, STATES, st.integers(0, 3000)),  # usage varies
    st.tuples(st.just("del_node"), IDX),
    st.tuples(st.just("workload"), IDX, st.integers(1, 5)),
    st.tuples(st.just("del_workload"), IDX),
    st.tuples(st.just("replica"), IDX, IDX),
    st.tuples(st.just("del_replica"), IDX),
    st.tuples(st.just("garbage"), st.sampled_from(["nodes", "workloads", "replicas"]), IDX),
    st.tuples(st.just("txn"), st.lists(IDX, min_size=1, max_size=4, unique=True)),
    st.tuples(st.just("wipe_replicas")),
    st.tuples(st.just("link_down")),
    st.tuples(st.just("link_up")),
    st.tuples(st.just("compact")),
    st.tuples(st.just("reload")),
    st.tuples(st.just("settle")),
)


def node(i: int, state: NodeState = NodeState.READY, cpu: int = 0) -> Node:
    big = Resources(4000, 8 << 30)
    return Node.make(f"n{i}", state=state, allocatable=big, capacity=big, usage=Resources(cpu))


def workload(i: int, replicas: int) -> WorkloadRecord:
    return WorkloadRecord(spec=WorkloadSpec(name=f"w{i}", image="busybox", replicas=replicas))


def replica(i: int, n: int) -> Replica:
    return Replica(id=f"w0-r{i}", workload="w0", node_id=f"n{n}")


async def apply(
    op: tuple[Any, ...], cs: ClusterState, store: TestStore, view: LiveView, clock: FakeClock
) -> None:
    match op:
        case ("node", i, state, cpu):
            await cs.nodes.put(f"n{i}", node(i, state, cpu))
        case ("del_node", i):
            await cs.nodes.delete(f"n{i}")
        case ("workload", i, n):
            await cs.workloads.put(f"w{i}", workload(i, n))
        case ("del_workload", i):
            await cs.workloads.delete(f"w{i}")
        case ("replica", i, n):
            await cs.replicas.put(f"w0/w0-r{i}", replica(i, n))
        case ("del_replica", i):
            await cs.replicas.delete(f"w0/w0-r{i}")
        case ("garbage", table, i):
            await store.put(f"/cloudless/{table}/g{i}", b"not json")
        case ("txn", idx):
            ops = [cs.replicas.put_op(f"w0/w0-r{i}", replica(i, i)) for i in idx]
            ops += [Put(f"/cloudless/events/e{i}", b"{}") for i in idx]
            await store.txn([], ops)
        case ("wipe_replicas",):
            await store.txn([], [Delete("/cloudless/replicas/", prefix=True)])
        case ("link_down",):
            store.down = True
        case ("link_up",):
            store.down = False
            await clock.run_for(3, step=0.25)  # past the watch backoff cap (2 s)
        case ("compact",):
            with contextlib.suppress(Compacted):  # nothing new since the last compaction
                await store.compact(await store.revision())
        case ("reload",):
            if not store.down:
                await view.reload()
        case ("settle",):
            for _ in range(5):
                await asyncio.sleep(0)


async def scenario(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    store = TestStore(clock)
    cs = ClusterState(store)
    await cs.nodes.put("n0", node(0))
    view = LiveView(cs, clock)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(view.run())
        async with asyncio.timeout(5):
            assert await view.caught_up(1, within=3600)
        for op in ops:
            await apply(op, cs, store, view, clock)
        store.down = False
        await clock.run_for(3, step=0.25)
        async with asyncio.timeout(5):
            assert await view.caught_up(await store.revision(), within=3600)
        want = await cs.snapshot()
        got = view.snapshot()
        assert (got.revision, got.view, got.problems) == (want.revision, want.view, want.problems)
        task.cancel()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=25))
def test_view_equals_a_fresh_listing_after_any_history(ops: list[tuple[Any, ...]]) -> None:
    asyncio.run(scenario(ops))
