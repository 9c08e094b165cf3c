"""The channel contract in one event loop: for the simulator and tests.

``MemoryNetwork`` maps addresses to listeners. A ``MemoryListener`` serves each accepted
session with its ``SessionHandler`` in its own task group (``run()``); stopping it (cancelling
``run``) breaks every session it holds, as a coordinator process that dies does. A
``MemoryDialer`` connects as one node (the authenticated id the handler is given) and keeps
its open connections (``MemoryConnection``), on which a test injects what a network does:

* ``vanish()``: both ends break at once (a killed process whose kernel resets the socket);
* ``cut()``: nothing crosses any more and nothing says so (no FIN); ``break_coordinator_end()``
  later stands for the coordinator's transport giving up (keepalive);
* ``hold()``/``release()``: the agent's end stops reading and writing (a frozen process);
  messages wait, and flow in order once released.

Each direction is a queue of at most ``capacity`` messages: a sender to a peer that does not
read waits once it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import Clock, SystemClock
from cloudless.transport.channel import (
    AgentEnd,
    Channel,
    ChannelBroken,
    ChannelClosed,
    ChannelError,
    Dialer,
    EndOfChannel,
    Refused,
    SessionHandler,
)

log = logging.getLogger("cloudless.transport.memory")

T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")

DEFAULT_CAPACITY = 64


class _Pipe(Generic[T]):
    """One direction: a bounded queue with one reader and one writer."""

    def __init__(self, capacity: int, clock: Clock) -> None:
        self.items: deque[T] = deque()
        self.capacity = capacity
        self.clock = clock
        self.end: ChannelError | None = None  # raised to the reader once drained
        self.rx_error: ChannelError | None = None  # raised to the reader at once
        self.tx_error: ChannelError | None = None  # raised to the writer at once
        self.dropping = False  # a cut link: puts vanish
        self.reader_held = False  # a frozen reader takes nothing
        self.writer_held = False  # a frozen writer puts nothing
        self.last_get = clock.monotonic()
        self._getter: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        for f in (self._getter, self._putter):
            if f is not None and not f.done():
                f.set_result(None)

    async def get(self) -> T:
        while True:
            if self.rx_error is not None and not self.reader_held:
                raise self.rx_error
            if self.items and not self.reader_held:
                item = self.items.popleft()
                self.last_get = self.clock.monotonic()
                if self._putter is not None and not self._putter.done():
                    self._putter.set_result(None)
                return item
            if not self.items and self.end is not None and not self.reader_held:
                raise self.end
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None

    async def put(self, item: T) -> None:
        while True:
            if self.writer_held:
                pass  # a frozen writer waits, whatever happened meanwhile
            elif self.tx_error is not None:
                raise self.tx_error
            elif self.dropping:
                return
            elif len(self.items) < self.capacity:
                self.items.append(item)
                if self._getter is not None and not self._getter.done():
                    self._getter.set_result(None)
                return
            self._putter = asyncio.get_running_loop().create_future()
            try:
                await self._putter
            finally:
                self._putter = None

    def finish(self, exc: ChannelError) -> None:
        """The writer is done: the reader gets ``exc`` after what is queued."""
        if self.end is None:
            self.end = exc
        self.wake()

    def reader_gone(self, exc: ChannelError) -> None:
        """The reader closed: what is queued is dropped and the writer gets ``exc``."""
        self.items.clear()
        if self.tx_error is None:
            self.tx_error = exc
        self.wake()

    def break_(self, exc: ChannelError) -> None:
        """Both sides fail at once; what is queued is lost."""
        self.rx_error = self.rx_error or exc
        self.tx_error = self.tx_error or exc
        self.items.clear()
        self.wake()


class MemoryEnd(Channel[S, R]):
    """One end of a ``MemoryConnection``."""

    def __init__(self, inbox: _Pipe[R], outbox: _Pipe[S]) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.closed = False

    async def send(self, msg: S) -> None:
        if self.closed:
            raise ChannelClosed("send on a closed channel")
        await self._outbox.put(msg)

    async def receive(self) -> R:
        if self.closed:
            raise ChannelClosed("receive on a closed channel")
        return await self._inbox.get()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._outbox.finish(EndOfChannel("the peer closed the channel"))
        self._inbox.reader_gone(EndOfChannel("the peer closed the channel"))


class MemoryConnection:
    """An agent's session with a listener: both ends and the faults a test can inject."""

    def __init__(self, node_id: str, address: str, capacity: int, clock: Clock) -> None:
        self.node_id = node_id
        self.address = address
        self.up: _Pipe[pb.AgentMessage] = _Pipe(capacity, clock)
        self.down: _Pipe[pb.CoordinatorMessage] = _Pipe(capacity, clock)
        self.agent: MemoryEnd[pb.AgentMessage, pb.CoordinatorMessage] = MemoryEnd(
            self.down, self.up
        )
        self.coordinator: MemoryEnd[pb.CoordinatorMessage, pb.AgentMessage] = MemoryEnd(
            self.up, self.down
        )

    @property
    def last_read(self) -> float:
        """When the coordinator last read from this session (monotonic)."""
        return self.up.last_get

    @property
    def coordinator_open(self) -> bool:
        """Whether the coordinator's end still serves this session."""
        return not self.coordinator.closed and self.up.rx_error is None

    def vanish(self, why: str = "the peer vanished") -> None:
        self.up.break_(ChannelBroken(why))
        self.down.break_(ChannelBroken(why))

    def cut(self) -> None:
        for p in (self.up, self.down):
            p.dropping = True
            p.items.clear()
            p.wake()

    def break_coordinator_end(self, why: str = "keepalive timed out") -> None:
        """The coordinator's transport gives the session up; the agent's end hears nothing."""
        self.up.rx_error = self.up.rx_error or ChannelBroken(why)
        self.down.tx_error = self.down.tx_error or ChannelBroken(why)
        self.up.wake()
        self.down.wake()

    def hold(self) -> None:
        self.down.reader_held = True
        self.up.writer_held = True

    def release(self) -> None:
        self.down.reader_held = self.up.writer_held = False
        self.up.wake()
        self.down.wake()


class MemoryListener:
    """Serves sessions at one address while ``run()`` runs."""

    def __init__(self, network: MemoryNetwork, address: str, handler: SessionHandler) -> None:
        self.network = network
        self.address = address
        self.handler = handler
        self.connections: set[MemoryConnection] = set()
        self._tg: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        if self.network.listeners.get(self.address) not in (None, self):
            raise OSError(f"{self.address} is already in use")
        self.network.listeners[self.address] = self
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await asyncio.Event().wait()
        finally:
            self._tg = None
            if self.network.listeners.get(self.address) is self:
                del self.network.listeners[self.address]
            for c in list(self.connections):
                c.vanish(f"{self.address} went away")
            self.connections.clear()

    def accept(self, conn: MemoryConnection) -> None:
        if self._tg is None:
            raise ChannelBroken(f"{self.address}: connection refused")
        self.connections.add(conn)
        self._tg.create_task(self._serve(conn), name=f"session {conn.node_id}")

    async def _serve(self, conn: MemoryConnection) -> None:
        end = conn.coordinator
        try:
            await self.handler(conn.node_id, end)
        except Refused as e:
            conn.down.finish(e)
            conn.up.reader_gone(e)
        except ChannelError:
            pass
        except asyncio.CancelledError:  # the server goes away: no clean close
            conn.vanish(f"{self.address} went away")
            raise
        except Exception as e:  # as gRPC: the RPC fails, the server goes on
            log.exception("session handler for %s failed", conn.node_id)
            conn.vanish(f"handler failed: {e}")
        finally:
            await end.aclose()
            self.connections.discard(conn)


class MemoryNetwork:
    """Addresses to listeners, for dialers in the same event loop."""

    def __init__(self, clock: Clock | None = None, capacity: int = DEFAULT_CAPACITY) -> None:
        self.clock = clock or SystemClock()
        self.capacity = capacity
        self.listeners: dict[str, MemoryListener] = {}

    def listener(self, address: str, handler: SessionHandler) -> MemoryListener:
        return MemoryListener(self, address, handler)

    def dialer(self, node_id: str) -> MemoryDialer:
        return MemoryDialer(self, node_id)


class MemoryDialer(Dialer):
    """Connects as ``node_id``. ``unreachable`` makes every connect fail (a cut link)."""

    def __init__(self, network: MemoryNetwork, node_id: str) -> None:
        self.network = network
        self.node_id = node_id
        self.unreachable = False
        self.connections: set[MemoryConnection] = set()

    @contextlib.asynccontextmanager
    async def connect(self, target: str) -> AsyncIterator[AgentEnd]:
        listener = self.network.listeners.get(target)
        if self.unreachable or listener is None:
            raise ChannelBroken(f"{target} unreachable")
        conn = MemoryConnection(self.node_id, target, self.network.capacity, self.network.clock)
        listener.accept(conn)
        self.connections.add(conn)
        try:
            yield conn.agent
        finally:
            self.connections.discard(conn)
            await conn.agent.aclose()
