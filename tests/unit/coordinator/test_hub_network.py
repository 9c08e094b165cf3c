"""The dispatcher sends each node its network with its set, and re-sends the set when the network
of a node changes (``repush``); without a network (``network_for`` None) the field is unset."""

from __future__ import annotations

import asyncio

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore


async def test_network_travels_with_the_set_and_changes_repush_it() -> None:
    clock = FakeClock()
    state = ClusterState(MemoryStore(clock))
    for n in ("n1", "n2"):
        await state.nodes.put(n, Node.make(n, state=NodeState.READY))
    plane = AgentPlane(state, clock, EventRecorder(state, clock))
    hub = plane.dispatcher
    lead = asyncio.create_task(plane.lead(NO_FENCE))
    try:
        assert await hub.wait_active(5)
        s1, s2 = await hub.open_session("n1"), await hub.open_session("n2")
        assert not hub.assignments_for(s1).assignments.HasField("network")  # networking off

        nets = {"n1": pb.NetworkConfig(slot=0), "n2": pb.NetworkConfig(slot=1)}
        hub.network_for = nets.get
        for s in (s1, s2):  # the set each session gets when it opens
            first = await asyncio.wait_for(s.outbox.get(), 5)
            assert first.WhichOneof("kind") == "assignments"
        hub.repush(["n2"])
        msg = await asyncio.wait_for(s2.outbox.get(), 5)
        assert msg.assignments.network.slot == 1
        assert s1.outbox.empty()  # n1's network did not change: nothing sent
    finally:
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)


async def test_a_service_change_goes_alone_to_streams_that_hold_its_base() -> None:
    clock = FakeClock()
    state = ClusterState(MemoryStore(clock))
    for n in ("n1", "n2", "n3"):
        await state.nodes.put(n, Node.make(n, state=NodeState.READY))
    plane = AgentPlane(state, clock, EventRecorder(state, clock))
    hub = plane.dispatcher
    lead = asyncio.create_task(plane.lead(NO_FENCE))
    try:
        assert await hub.wait_active(5)
        # n1's stream carried the table at revision 3, n2's at revision 2
        nets = {
            "n1": pb.NetworkConfig(slot=0, services_revision=3),
            "n2": pb.NetworkConfig(slot=1, services_revision=2),
            "n3": pb.NetworkConfig(slot=2, services_revision=3),
        }
        hub.network_for = nets.get
        s1, s2, s3 = [await hub.open_session(n) for n in ("n1", "n2", "n3")]
        for s in (s1, s2, s3):
            first = await asyncio.wait_for(s.outbox.get(), 5)
            assert first.WhichOneof("kind") == "assignments"
        for s in (s1, s2):  # n3's agent is older: its Hello does not offer service updates
            await hub.on_hello(s, pb.Hello(node_id=s.node_id, services_updates=True))
        await hub.on_hello(s3, pb.Hello(node_id="n3"))
        web = pb.NetworkService(namespace="default", name="web", vip="10.43.0.1")
        update = pb.NetworkServicesUpdate(base=3, revision=4, upserts=[web])
        nets["n2"] = pb.NetworkConfig(slot=1, services_revision=4, services=[web])
        nets["n3"] = pb.NetworkConfig(slot=2, services_revision=4, services=[web])
        hub.push_services(update, ["n1", "n2", "n3", "gone"])
        msg = await asyncio.wait_for(s1.outbox.get(), 5)
        assert msg.WhichOneof("kind") == "services_update"  # at base 3: the change alone
        assert list(msg.services_update.upserts) == [web]
        assert s1.services_revision == 4
        # n2 holds revision 2, not the base: its whole set (with the table at 4) instead
        msg = await asyncio.wait_for(s2.outbox.get(), 5)
        assert msg.WhichOneof("kind") == "assignments"
        assert msg.assignments.network.services_revision == 4
        assert s2.services_revision == 4
        # n3 holds the base, but its agent does not apply changes alone: its whole set
        msg = await asyncio.wait_for(s3.outbox.get(), 5)
        assert msg.WhichOneof("kind") == "assignments"
    finally:
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)
