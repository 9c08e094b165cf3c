"""What agents report: replica status text is cleaned in place, bad endpoints dropped; a log
chunk reaches its reader only from the node the request went to."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.agentapi.checks import (
    MAX_REASON,
    clean_goodbye,
    clean_statuses,
    heartbeat_problems,
)
from cloudless.coordinator.dispatcher.dispatcher import Session
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import Replica
from cloudless.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("reason", "endpoint", "kept_reason", "dropped"),
    [
        ("pull failed", "10.0.0.1:8080", "pull failed", 0),
        ("line 1\nline 2\tend", "", "line 1\nline 2\tend", 0),  # line breaks and tabs stay
        ("bell\x07 esc\x1b[31m", "", "bell  esc [31m", 0),  # other controls become spaces
        ("r" * 5000, "", "r" * MAX_REASON + "...", 0),  # cut to MAX_REASON
        ("ok", "10.0.0.1:80\nX-Injected: 1", None, 1),  # an endpoint is one line
        ("ok", "e" * 300, None, 1),  # 300 > 253 characters
    ],
)
def test_statuses_are_cleaned(
    reason: str, endpoint: str, kept_reason: str | None, dropped: int
) -> None:
    statuses = [pb.ReplicaStatus(replica_id="r1", reason=reason, endpoint=endpoint)]
    holder = pb.Heartbeat(replicas=statuses)
    why = clean_statuses(holder.replicas)
    assert len(why) == dropped
    if kept_reason is None:
        assert len(holder.replicas) == 0
    else:
        assert holder.replicas[0].reason == kept_reason


@pytest.mark.parametrize(
    ("usage", "problems"),
    [
        (pb.Resources(cpu_millis=500, memory_bytes=1 << 30), []),
        (pb.Resources(cpu_millis=-1), ["heartbeat.usage.cpu_millis: -1 is out of range"]),
        # 2**61 > MAX_BYTES = 2**60
        (pb.Resources(disk_bytes=2**61), ["heartbeat.usage.disk_bytes: 2305843009213693952"]),
    ],
)
def test_heartbeat_usage_is_bounded(usage: pb.Resources, problems: list[str]) -> None:
    got = heartbeat_problems(pb.Heartbeat(usage=usage))
    assert len(got) == len(problems)
    assert all(g.startswith(p) for g, p in zip(got, problems, strict=True))


@pytest.mark.parametrize(
    "status",
    [
        pb.ReplicaStatus(replica_id="r1", restarts=-1),
        pb.ReplicaStatus(replica_id="r1", started_at=float("nan")),
        pb.ReplicaStatus(replica_id="r1", started_at=float("inf")),
        pb.ReplicaStatus(replica_id="r1", started_at=-5.0),
        pb.ReplicaStatus(replica_id="r\n1"),
    ],
)
def test_statuses_that_make_no_sense_are_dropped(status: pb.ReplicaStatus) -> None:
    holder = pb.Heartbeat(replicas=[status, pb.ReplicaStatus(replica_id="r2")])
    assert len(clean_statuses(holder.replicas)) == 1
    assert [s.replica_id for s in holder.replicas] == ["r2"]  # the good one is kept


def test_goodbye_reason_is_cut() -> None:
    bye = pb.Goodbye(reason="x\x00" * 4000)
    clean_goodbye(bye)
    assert len(bye.reason) == MAX_REASON + 3 and "\x00" not in bye.reason


async def test_log_chunks_only_from_the_node_asked() -> None:
    state = ClusterState(MemoryStore(FakeClock()))
    hub = AgentPlane(state, FakeClock(), EventRecorder(state, FakeClock())).dispatcher
    hub._index.put(Replica(id="r1", workload="w", node_id="a"))
    hub.sessions["a"] = Session("a")
    async with hub.log_stream("r1", follow=True, tail=0, request_id="rq") as q:
        forged = pb.LogChunk(request_id="rq", data=b"forged")
        assert hub.on_log("b", forged) is False  # b was not asked
        assert q.empty()
        assert hub.on_log("a", pb.LogChunk(request_id="rq", data=b"real")) is True
        got = await asyncio.wait_for(q.get(), 1)
        assert got.data == b"real"
    # after the request ended, a late chunk from the asked node is dropped quietly
    assert hub.on_log("a", pb.LogChunk(request_id="rq", data=b"late")) is True
