"""The dispatcher writes agents' replica reports through ``Replica.advance``: a report that moves
observed state backward within an incarnation is dropped (logged), the store unchanged."""

from __future__ import annotations

import logging

import pytest

from cloudless.coordinator.dispatcher.dispatcher import Dispatcher
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import Replica, ReplicaState
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

R = ReplicaState


async def hub_with(stored: Replica) -> tuple[Dispatcher, ClusterState]:
    clock = FakeClock()
    state = ClusterState(MemoryStore(clock))
    await state.replicas.put(ClusterState.replica_key(stored), stored)
    plane = AgentPlane(state, clock, EventRecorder(state, clock))
    hub = plane.dispatcher
    hub.start(NO_FENCE)  # leading, as ``AgentPlane.lead`` starts it
    return hub, state


@pytest.mark.parametrize(
    ("stored", "reported", "restarts", "written"),
    [
        (R.STARTING, R.RUNNING, 0, R.RUNNING),  # forward: written
        (R.RUNNING, R.PULLING, 0, R.RUNNING),  # backward, same incarnation: dropped
        (R.FAILED, R.STARTING, 1, R.STARTING),  # a restart (restarts 0 -> 1): written
    ],
)
async def test_reports_only_move_observed_state_forward(
    stored: ReplicaState,
    reported: ReplicaState,
    restarts: int,
    written: ReplicaState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cur = Replica("web-1", "web", node_id="n1", spec_version=1, observed=stored)
    hub, state = await hub_with(cur)
    report = Replica(
        "web-1", "web", node_id="n1", spec_version=1, observed=reported, restarts=restarts
    )
    with caplog.at_level(logging.WARNING, logger="cloudless.coordinator.dispatcher"):
        await hub._update_replica(report, cur)
    rec = await state.replicas.get(ClusterState.replica_key(cur))
    assert rec is not None and rec.value.observed is written
    events = [r.value["message"] for r in (await state.events.list()).records]
    if written is stored:
        assert rec.mod_revision == rec.create_revision  # not rewritten
        assert events == []
        assert "dropped, observed state only moves forward" in caplog.text
    else:
        assert events == [f"replica web-1 on n1: {stored.value} -> {reported.value}"]
