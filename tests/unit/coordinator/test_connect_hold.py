"""``AgentApi.Connect`` while no leader is known: the stream is held (not redirected at once)
and becomes a session when this coordinator starts leading; a leader elsewhere gets a
redirect at once; a hold that runs out is a redirect that says no leader was elected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.agentapi.service import AgentApi
from cloudless.coordinator.dispatcher.dispatcher import NotLeader, Session
from cloudless.lib.clock import SystemClock

ME = "10.0.0.1:7443"


class FakeHub:
    """Not leading until ``lead()``; then ``open_session`` gives a session."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.sessions: list[Session] = []
        self.opened = asyncio.Event()
        self.closed: list[str] = []

    def lead(self) -> None:
        self.ready.set()

    async def open_session(self, node_id: str) -> Session:
        if not self.ready.is_set():
            raise NotLeader("not the leader")
        self.sessions.append(Session(node_id))
        self.opened.set()
        return self.sessions[-1]

    async def wait_active(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            pass
        return self.ready.is_set()

    def close_session(self, s: Session) -> None:
        self.closed.append(s.node_id)


def make_api(hub: FakeHub, leader: list[str]) -> AgentApi:
    api = AgentApi.__new__(AgentApi)
    api.dispatcher = hub  # type: ignore[assignment]
    api.clock = SystemClock()
    api.leader_address = lambda: leader[0] or None
    api.agent_endpoints = lambda: [ME]
    api.HOLD_WITHOUT_LEADER_S = 1.0
    api.NUDGE_S = 0.2

    async def node(context: Any) -> str:
        return "n1"

    api._authorize_node = node  # type: ignore[method-assign]
    return api


async def no_messages() -> AsyncIterator[pb.AgentMessage]:
    await asyncio.Event().wait()
    yield pb.AgentMessage()  # never reached


async def first_kinds(api: AgentApi, until: str, within: float = 3.0) -> list[str]:
    """Kinds of the messages Connect yields until one of kind ``until`` (or a redirect)."""
    kinds: list[str] = []
    stream = api.Connect(no_messages(), None)  # type: ignore[arg-type]
    async with asyncio.timeout(within):
        async for msg in stream:
            kinds.append(msg.WhichOneof("kind") or "nudge")
            if kinds[-1] in (until, "redirect"):
                break
    await stream.aclose()
    return kinds


async def test_held_until_this_coordinator_leads() -> None:
    hub = FakeHub()
    api = make_api(hub, [""])
    kinds: list[str] = []
    assigned = asyncio.Event()

    async def consume() -> None:
        async for msg in api.Connect(no_messages(), None):  # type: ignore[arg-type]
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
    assert hub.closed == ["n1"]


async def test_leader_elsewhere_is_a_redirect_at_once() -> None:
    api = make_api(FakeHub(), ["10.0.0.2:7443"])
    assert await first_kinds(api, "redirect", within=0.5) == ["redirect"]


async def test_hold_runs_out_with_no_leader_elected() -> None:
    api = make_api(FakeHub(), [""])
    kinds = await first_kinds(api, "redirect", within=3.0)
    assert kinds[-1] == "redirect" and 3 <= kinds.count("nudge") <= 5  # 1 s / 0.2 s
