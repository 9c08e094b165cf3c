"""Conformance checks for the agent-coordinator channel (``cloudless.transport.channel``).

As ``trio.testing.check_two_way_stream``: each check takes a ``ChannelHarness`` (how to
start a server with a handler, dial it as a node, and make a peer vanish) and fails with an
``AssertionError`` naming the broken rule. ``CHECKS`` lists them all; an implementation is
conformant when every one passes. Timeouts are in real seconds and generous: a check waits
for something that must happen, it never sleeps to let something happen.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.transport.channel import (
    ChannelBroken,
    ChannelClosed,
    ChannelError,
    CoordinatorEnd,
    Dialer,
    EndOfChannel,
    RefusalCode,
    Refused,
    SessionHandler,
)

WITHIN = 10.0  # seconds for anything that must happen


class ChannelHarness(abc.ABC):
    """One implementation, as the checks drive it."""

    #: Messages of ``BIG`` bytes after which a sender to a peer that does not read must wait.
    backlog_limit: int = 400
    BIG = 256 << 10

    @abc.abstractmethod
    async def start(self, handler: SessionHandler) -> str:
        """Serve sessions with ``handler`` until ``stop``; return the address to dial."""

    @abc.abstractmethod
    def dialer(self, node_id: str) -> Dialer:
        """A dialer that authenticates as ``node_id``."""

    @abc.abstractmethod
    async def vanish_server(self) -> None:
        """The server disappears without closing its sessions (a killed process)."""

    @abc.abstractmethod
    async def sever(self) -> None:
        """Every connection breaks at once, seen from both sides as a vanished peer."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release everything (called once at the end of each check)."""

    @abc.abstractmethod
    def unreachable(self) -> str:
        """An address where nothing listens."""


def hb(i: int, size: int = 0) -> pb.AgentMessage:
    if size:
        return pb.AgentMessage(log=pb.LogChunk(request_id=str(i), data=b"x" * size))
    return pb.AgentMessage(heartbeat=pb.Heartbeat(seq=i))


def ack(i: int, size: int = 0) -> pb.CoordinatorMessage:
    if size:
        return pb.CoordinatorMessage(logs=pb.LogRequest(request_id=str(i), replica_id="r" * size))
    return pb.CoordinatorMessage(ack=pb.HeartbeatAck(seq=i))


def seq_up(m: pb.AgentMessage) -> int:
    return int(m.log.request_id) if m.WhichOneof("kind") == "log" else m.heartbeat.seq


def seq_down(m: pb.CoordinatorMessage) -> int:
    return int(m.logs.request_id) if m.WhichOneof("kind") == "logs" else m.ack.seq


async def _within(aw: Awaitable[object], what: str, seconds: float = WITHIN) -> object:
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise AssertionError(f"not within {seconds:g}s: {what}") from None


async def _raises(
    aw: Awaitable[object], kinds: tuple[type[BaseException], ...], what: str
) -> BaseException:
    try:
        got = await _within(aw, what)
    except kinds as e:
        return e
    raise AssertionError(f"{what}: expected {[k.__name__ for k in kinds]}, got {got!r}")


class _Server:
    """A handler whose behaviour each check sets, and what it saw."""

    def __init__(self, body: Callable[[str, CoordinatorEnd], Awaitable[None]]) -> None:
        self.body = body
        self.node_ids: list[str] = []
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def __call__(self, node_id: str, end: CoordinatorEnd) -> None:
        self.node_ids.append(node_id)
        how = "returned"
        try:
            await self.body(node_id, end)
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        except BaseException as e:
            how = type(e).__name__
            raise
        finally:
            if not self.ended.done():
                self.ended.set_result(how)


async def check_order_both_ways(h: ChannelHarness) -> None:
    """Messages arrive once each, in order, in both directions at the same time, and the
    handler is told the dialer's node id."""
    n = 300
    got_up: list[int] = []
    up_done = asyncio.Event()

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        async def reader() -> None:
            for _ in range(n):
                got_up.append(seq_up(await end.receive()))
            up_done.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(reader())
            for i in range(n):
                await end.send(ack(i))
        await asyncio.Event().wait()  # the client closes

    server = _Server(body)
    target = await h.start(server)
    async with h.dialer("node-1").connect(target) as ch:
        got_down: list[int] = []

        async def reader() -> None:
            for _ in range(n):
                got_down.append(seq_down(await ch.receive()))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(_within(reader(), "300 messages down"))
            for i in range(n):
                await ch.send(hb(i))
        await _within(up_done.wait(), "300 messages up")
    assert got_down == list(range(n)), f"down: {got_down[:20]}..."
    assert got_up == list(range(n)), f"up: {got_up[:20]}..."
    assert server.node_ids == ["node-1"], server.node_ids


async def check_server_closes(h: ChannelHarness) -> None:
    """A handler that returns ends the session: the agent reads what was sent, then
    ``EndOfChannel``; after the agent's ``aclose`` its calls raise ``ChannelClosed``."""

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        for i in range(3):
            await end.send(ack(i))

    target = await h.start(_Server(body))
    async with h.dialer("node-1").connect(target) as ch:
        got = [seq_down(await _within(ch.receive(), "message"))]  # type: ignore[arg-type]
        got += [seq_down(await ch.receive()) for _ in range(2)]
        assert got == [0, 1, 2]
        await _raises(ch.receive(), (EndOfChannel,), "receive after the server closed")
        await ch.aclose()
        await ch.aclose()  # idempotent
        await _raises(ch.receive(), (ChannelClosed,), "receive after aclose")
        await _raises(ch.send(hb(9)), (ChannelClosed,), "send after aclose")


async def check_agent_closes(h: ChannelHarness) -> None:
    """The agent's ``aclose`` ends the coordinator's session promptly (its receive ends or
    its handler is cancelled); later calls on the agent's end raise ``ChannelClosed``."""
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    ended_with: list[str] = []

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        got.set_result(seq_up(await end.receive()))
        try:
            await end.receive()
        except (EndOfChannel, ChannelBroken) as e:
            ended_with.append(type(e).__name__)

    server = _Server(body)
    target = await h.start(server)
    async with h.dialer("node-1").connect(target) as ch:
        await ch.send(hb(7))
        assert await _within(got, "the first message") == 7
        await ch.aclose()
        await _raises(ch.send(hb(8)), (ChannelClosed,), "send after aclose")
        await _raises(ch.receive(), (ChannelClosed,), "receive after aclose")
    how = await _within(server.ended, "the handler ends after the agent closed")
    assert how in ("returned", "cancelled"), how


async def check_cancelled_receive_loses_nothing(h: ChannelHarness) -> None:
    """Cancelling a pending ``receive`` keeps the channel usable and loses no message."""
    go = asyncio.Event()

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        await end.receive()  # the agent says "now"
        go.set()
        await end.send(ack(1))
        await end.send(ack(2))
        await asyncio.Event().wait()

    target = await h.start(_Server(body))
    async with h.dialer("node-1").connect(target) as ch:
        pending = asyncio.ensure_future(ch.receive())
        await asyncio.sleep(0.05)
        pending.cancel()
        try:
            await pending
            raise AssertionError("a receive with nothing to read returned")
        except asyncio.CancelledError:
            pass
        await ch.send(hb(0))
        await _within(go.wait(), "the handler got the message")
        first = await _within(ch.receive(), "the message sent after a cancelled receive")
        assert isinstance(first, pb.CoordinatorMessage)
        assert [seq_down(first), seq_down(await ch.receive())] == [1, 2]


async def _backpressure(h: ChannelHarness, *, up: bool) -> None:
    reading = asyncio.Event()
    received: list[int] = []
    drained = asyncio.Event()
    n_sent = 0

    async def drain(receive: Callable[[], Awaitable[object]], seq: Callable[[object], int]) -> None:
        await reading.wait()
        for _ in range(n_sent):
            received.append(seq(await receive()))
        drained.set()

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        if up:
            await drain(end.receive, seq_up)  # type: ignore[arg-type]
        else:
            await sender(end.send, ack)  # type: ignore[arg-type]
        await asyncio.Event().wait()

    blocked = asyncio.Event()

    async def sender(
        send: Callable[[object], Awaitable[None]], make: Callable[..., object]
    ) -> None:
        nonlocal n_sent
        for i in range(h.backlog_limit):
            t = asyncio.ensure_future(send(make(i, h.BIG)))
            done, _ = await asyncio.wait({t}, timeout=1.0)
            n_sent = i + 1
            if not done:
                blocked.set()
                reading.set()
                await _within(t, "a blocked send completes once the peer reads")
                return
            t.result()
        raise AssertionError(
            f"{h.backlog_limit} messages of {h.BIG} bytes sent to a peer that does not read "
            "without send ever waiting (no backpressure)"
        )

    target = await h.start(_Server(body))
    async with h.dialer("node-1").connect(target) as ch:
        if up:
            await sender(ch.send, hb)  # type: ignore[arg-type]
        else:
            await _within(blocked.wait(), "the coordinator's send blocks", 60)
            await drain(ch.receive, seq_down)  # type: ignore[arg-type]
        await _within(drained.wait(), "the backlog arrives", 60)
        assert received == list(range(n_sent))


async def check_backpressure_agent_to_coordinator(h: ChannelHarness) -> None:
    """The agent's ``send`` waits when the coordinator does not read; nothing is lost."""
    await _backpressure(h, up=True)


async def check_backpressure_coordinator_to_agent(h: ChannelHarness) -> None:
    """The coordinator's ``send`` waits when the agent does not read; nothing is lost."""
    await _backpressure(h, up=False)


async def check_refusal(h: ChannelHarness) -> None:
    """A handler's ``Refused`` reaches the agent, code and message, after what it sent."""

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        await end.send(ack(1))
        raise Refused(RefusalCode.PERMISSION_DENIED, f"node {node_id} was removed")

    target = await h.start(_Server(body))
    async with h.dialer("node-9").connect(target) as ch:
        assert seq_down(await _within(ch.receive(), "the message before the refusal")) == 1  # type: ignore[arg-type]
        e = await _raises(ch.receive(), (Refused,), "receive after a refusal")
        assert isinstance(e, Refused)
        assert e.code is RefusalCode.PERMISSION_DENIED, e.code
        assert e.message == "node node-9 was removed", e.message


async def check_server_vanishes(h: ChannelHarness) -> None:
    """A server that disappears breaks the agent's pending receive (``ChannelBroken``)."""
    started = asyncio.Event()

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        started.set()
        await asyncio.Event().wait()

    target = await h.start(_Server(body))
    async with h.dialer("node-1").connect(target) as ch:
        await ch.send(hb(0))
        await _within(started.wait(), "the session starts")
        pending = asyncio.ensure_future(ch.receive())
        await h.vanish_server()
        await _raises(pending, (ChannelBroken,), "receive when the server vanished")


async def check_connection_severed(h: ChannelHarness) -> None:
    """A connection that breaks under both ends: the agent's receive raises
    ``ChannelBroken``; the coordinator's handler ends (broken or cancelled)."""
    got = asyncio.Event()
    seen: list[str] = []

    async def body(node_id: str, end: CoordinatorEnd) -> None:
        await end.receive()
        got.set()
        try:
            await end.receive()
        except ChannelError as e:
            seen.append(type(e).__name__)

    server = _Server(body)
    target = await h.start(server)
    async with h.dialer("node-1").connect(target) as ch:
        await ch.send(hb(0))
        await _within(got.wait(), "the first message")
        pending = asyncio.ensure_future(ch.receive())
        await h.sever()
        await _raises(pending, (ChannelBroken,), "the agent's receive on a severed connection")
    how = await _within(server.ended, "the handler ends on a severed connection")
    assert how in ("returned", "cancelled"), how
    assert seen in ([], ["ChannelBroken"], ["EndOfChannel"]), seen


async def check_unreachable(h: ChannelHarness) -> None:
    """Dialing where nothing listens fails with ``ChannelBroken`` (at connect or at the
    first receive)."""

    async def attempt() -> None:
        async with h.dialer("node-1").connect(h.unreachable()) as ch:
            await ch.receive()

    await _raises(attempt(), (ChannelBroken,), "a session with an address nobody serves")


CHECKS: list[Callable[[ChannelHarness], Awaitable[None]]] = [
    check_order_both_ways,
    check_server_closes,
    check_agent_closes,
    check_cancelled_receive_loses_nothing,
    check_backpressure_agent_to_coordinator,
    check_backpressure_coordinator_to_agent,
    check_refusal,
    check_server_vanishes,
    check_connection_severed,
    check_unreachable,
]
