"""``AgentSessions.serve`` while no leader is known: the stream is held (not redirected at
once) and becomes a session when this coordinator starts leading; a leader elsewhere gets a
redirect at once; a hold that runs out is a redirect that says no leader was elected. Driven
over the in-memory channel, as an agent sees it, on a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.agentapi.sessions import AgentSessions
from cloudless.coordinator.dispatcher.dispatcher import NotLeader, Session
from cloudless.lib.clock import FakeClock
from cloudless.transport.channel import AgentEnd
from cloudless.transport.memory import MemoryNetwork

ME = "10.0.0.1:7443"


class FakeHub:
    """Not leading until ``lead()``; then ``open_session`` gives a session."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
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
        waits = (
            asyncio.ensure_future(self.ready.wait()),
            asyncio.ensure_future(self.clock.sleep(timeout)),
        )
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return self.ready.is_set()

    def close_session(self, s: Session) -> None:
        self.closed.append(s.node_id)
        self.ended.set()


@contextlib.asynccontextmanager
async def connected(hub: FakeHub, leader: list[str]) -> AsyncIterator[AgentEnd]:
    async def refused(message: str) -> None:
        return None

    sessions = AgentSessions(
        dispatcher=hub,  # type: ignore[arg-type]
        clock=hub.clock,
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


async def run_for(clock: FakeClock, seconds: float) -> None:
    """Advance in 0.1 s steps, letting everything that became ready run to completion."""
    for _ in range(round(seconds / 0.1)):
        clock.advance(0.1)
        for _ in range(50):
            await asyncio.sleep(0)


async def kinds_until_redirect(ch: AgentEnd, clock: FakeClock, seconds: float) -> list[str]:
    """Kinds of the messages received while ``seconds`` pass (up to a redirect)."""
    kinds: list[str] = []

    async def read() -> None:
        async for msg in ch:
            kinds.append(msg.WhichOneof("kind") or "nudge")
            if kinds[-1] == "redirect":
                return

    reader = asyncio.create_task(read())
    await run_for(clock, seconds)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return kinds


async def test_held_until_this_coordinator_leads() -> None:
    hub = FakeHub(FakeClock())
    async with connected(hub, [""]) as ch:
        kinds: list[str] = []
        assigned = asyncio.Event()

        async def consume() -> None:
            async for msg in ch:
                kinds.append(msg.WhichOneof("kind") or "nudge")
                if kinds[-1] == "assignments":
                    assigned.set()

        task = asyncio.create_task(consume())
        await run_for(hub.clock, 0.5)  # no leader for 0.5 s: nudges at 0.2 and 0.4 s
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
    hub = FakeHub(FakeClock())
    async with connected(hub, ["10.0.0.2:7443"]) as ch:
        assert await kinds_until_redirect(ch, hub.clock, 0.1) == ["redirect"]


async def test_hold_runs_out_with_no_leader_elected() -> None:
    hub = FakeHub(FakeClock())
    async with connected(hub, [""]) as ch:
        kinds = await kinds_until_redirect(ch, hub.clock, 1.5)
    # nudges at 0.2, 0.4, 0.6 and 0.8 s; at 1.0 s the hold runs out (a redirect), and a
    # fifth nudge may come first (both fall due at 1.0 s, the 0.1 s float steps decide)
    assert kinds[-1] == "redirect" and 4 <= kinds.count("nudge") <= 5, kinds
