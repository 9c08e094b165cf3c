"""``AgentSessions.serve`` while no leader is known: the stream is held (not redirected at
once) and becomes a session when this coordinator starts leading; a leader elsewhere gets a
redirect at once; a hold that runs out is a redirect that says no leader was elected. Driven
over the in-memory channel, as an agent sees it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.agentapi.sessions import AgentSessions
from cloudless.coordinator.dispatcher.hub import NotLeader, Session
from cloudless.lib.clock import SystemClock
from cloudless.transport.channel import AgentEnd
from cloudless.transport.memory import MemoryNetwork

ME = "10.0.0.1:7443"


class FakeHub:
    """Not leading until ``lead()``; then ``open_session`` gives a session."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.sessions: list[Session] = []
        self.opened = asyncio.Event()
        self.closed: list[str] = []
        self.ended = asyncio.Event()

    def lead(self) -> None:
        self.ready.set()

    async def open_session(self, node_id: str) -> Session:
        if not self.ready.is_set():
            raise NotLeader("not the leader")
        self.sessions.append(Session(node_id))
        self.opened.set()
        return self.sessions[-1]

    async def wait_active(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)
        return self.ready.is_set()

    def close_session(self, s: Session) -> None:
        self.closed.append(s.node_id)
        self.ended.set()


@contextlib.asynccontextmanager
async def connected(hub: FakeHub, leader: list[str]) -> AsyncIterator[AgentEnd]:
    async def refused(message: str) -> None:
        return None

    sessions = AgentSessions(
        hub=hub,  # type: ignore[arg-type]
        clock=SystemClock(),
        leader_address=lambda: leader[0] or None,
        agent_endpoints=lambda: [ME],
        refused=refused,
    )
    sessions.HOLD_WITHOUT_LEADER_S = 1.0
    sessions.NUDGE_S = 0.2
    net = MemoryNetwork()
    listener = net.listener(ME, sessions.serve)
    serving = asyncio.create_task(listener.run())
    await asyncio.sleep(0)
    try:
        async with net.dialer("n1").connect(ME) as ch:
            yield ch
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def first_kinds(ch: AgentEnd, until: str, within: float = 3.0) -> list[str]:
    """Kinds of the messages received until one of kind ``until`` (or a redirect)."""
    kinds: list[str] = []
    async with asyncio.timeout(within):
        async for msg in ch:
            kinds.append(msg.WhichOneof("kind") or "nudge")
            if kinds[-1] in (until, "redirect"):
                break
    return kinds


async def test_held_until_this_coordinator_leads() -> None:
    hub = FakeHub()
    async with connected(hub, [""]) as ch:
        kinds: list[str] = []
        assigned = asyncio.Event()

        async def consume() -> None:
            async for msg in ch:
                kinds.append(msg.WhichOneof("kind") or "nudge")
                if kinds[-1] == "assignments":
                    assigned.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)  # no leader for 0.5 s: nudges every 0.2 s, no redirect
        hub.lead()
        async with asyncio.timeout(1.0):
            await hub.opened.wait()
        hub.sessions[0].outbox.put_nowait(pb.CoordinatorMessage(assignments=pb.Assignments()))
        async with asyncio.timeout(1.0):
            await assigned.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert kinds == ["nudge", "nudge", "assignments"]
    async with asyncio.timeout(1.0):
        await hub.ended.wait()  # the agent's close ends the session
    assert hub.closed == ["n1"]


async def test_leader_elsewhere_is_a_redirect_at_once() -> None:
    async with connected(FakeHub(), ["10.0.0.2:7443"]) as ch:
        assert await first_kinds(ch, "redirect", within=0.5) == ["redirect"]


async def test_hold_runs_out_with_no_leader_elected() -> None:
    async with connected(FakeHub(), [""]) as ch:
        kinds = await first_kinds(ch, "redirect", within=3.0)
    assert kinds[-1] == "redirect" and 3 <= kinds.count("nudge") <= 5  # 1 s / 0.2 s
