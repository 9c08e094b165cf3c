"""A new leader's dispatcher serves no agent before it knows every workload: an assignment built
from replicas whose workload is not loaded yet leaves them out, and a node's set without
them tells its agent to stop them (the chaos scenario "cut the leader coordinator off" lost
every web container that way, with the records still saying running: nothing re-pushed)."""

from __future__ import annotations

import asyncio

from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore


async def test_no_session_until_workloads_are_loaded_then_the_full_set() -> None:
    clock = FakeClock()
    state = ClusterState(MemoryStore(clock))
    await state.nodes.put("n1", Node.make("n1", state=NodeState.READY))
    spec = WorkloadSpec(name="web", image="busybox:latest", replicas=1)
    await state.workloads.put("web", WorkloadRecord(spec=spec))
    r = Replica("web-1", "web", node_id="n1", spec_version=1, observed=ReplicaState.RUNNING)
    await state.replicas.put(ClusterState.replica_key(r), r)

    gate = asyncio.Event()
    listed = asyncio.Event()
    real_list = state.workloads.list

    async def slow_list(**kw: object):  # type: ignore[no-untyped-def]
        listed.set()
        await gate.wait()  # the workloads listing is slow (a loaded or cut-off etcd member)
        return await real_list(**kw)  # type: ignore[arg-type]

    state.workloads.list = slow_list  # type: ignore[method-assign]
    plane = AgentPlane(state, clock, EventRecorder(state, clock))
    hub = plane.dispatcher
    lead = asyncio.create_task(plane.lead(NO_FENCE))
    try:
        await asyncio.wait_for(listed.wait(), 5)
        for _ in range(50):  # the replicas loop has every chance to finish meanwhile
            await asyncio.sleep(0)
        # Not serving: an agent connecting now is held or redirected, never sent a set.
        assert not hub.active
        gate.set()
        for _ in range(200):
            if hub.active:
                break
            await asyncio.sleep(0.01)
        assert hub.active
        s = await hub.open_session("n1")
        msg = hub.assignments_for(s)
        assert [a.replica_id for a in msg.assignments.replicas] == ["web-1"]
    finally:
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)
