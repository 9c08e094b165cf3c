"""An agent's ``Leave``: liveness records a ``leave`` departure and sets the node draining in
one write; a repeat (after a reconnect) changes nothing; the stream's end departs the node."""

from __future__ import annotations

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.dispatcher.dispatcher import Session
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.clock import FakeClock
from cloudless.model.departure import DepartureKind
from cloudless.model.node import Node, NodeState
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore


async def test_leave_is_recorded_once_and_the_stream_end_departs() -> None:
    clock = FakeClock(start=1_000.0)
    state = ClusterState(MemoryStore(clock))
    await state.nodes.put("n1", Node.make("n1", state=NodeState.READY))
    plane = AgentPlane(state, clock, EventRecorder(state, clock))
    hub = plane.dispatcher
    hub.start(NO_FENCE)  # leading without the loops: only the handlers are exercised
    plane.liveness.start(NO_FENCE, [])
    membership = plane.liveness.membership
    membership.upsert(Node.make("n1", state=NodeState.READY), clock.monotonic())
    membership.heartbeat("n1", clock.monotonic())
    s = Session("n1")

    await hub.on_leave(s, pb.Leave(deadline_s=120, reason="lid closing"))
    rec = await state.nodes.get("n1")
    assert rec is not None
    n = rec.value
    assert n.state is NodeState.DRAINING
    assert n.departure is not None
    assert (n.departure.kind, n.departure.reason) == (DepartureKind.LEAVE, "lid closing")
    # deadline = now + 120 s, on the wall clock
    assert (n.departure.announced_at, n.departure.deadline) == (1_000.0, 1_120.0)

    clock.advance(5)
    await hub.on_leave(s, pb.Leave(deadline_s=300, reason="again"))
    again = await state.nodes.get("n1")
    assert again is not None and again.value.departure == n.departure  # first one stands

    # the stream ends: after the disconnect grace the node is departed, not offline
    membership.disconnected("n1", clock.monotonic())
    clock.advance(1)
    [t] = membership.tick(clock.monotonic())
    assert (t.new, t.reason) == (NodeState.DEPARTED, "left as announced")
