"""The agent-coordinator channel contract.

A ``Channel[S, R]`` is one session's duplex message stream, as seen from one end:

* **Order.** Messages arrive in the order they were sent, each exactly once, in both
  directions independently. Nothing is merged, split or reordered.
* **Backpressure.** ``send`` returns once the message is accepted by the transport; a peer
  that stops reading makes ``send`` wait after a bounded amount (a queue of messages in
  memory, the HTTP/2 flow-control window over gRPC) instead of buffering without end.
* **Close.** ``aclose()`` ends this end; it is idempotent and never raises a transport error.
  After it, ``send`` and ``receive`` on this end raise ``ChannelClosed``. The peer's
  ``receive`` then raises ``EndOfChannel`` once it has read everything sent before the close
  (a coordinator's handler may instead be cancelled, as gRPC does when its client goes away).
  A ``SessionHandler`` returning closes the coordinator's end the same way.
* **Vanished peer.** A peer that disappears without closing (process killed, link cut,
  transport keepalive expired, server stopped) makes pending and later ``receive``/``send``
  calls raise ``ChannelBroken``.
* **Refusal.** A coordinator refuses a session by raising ``Refused(code, message)`` from its
  handler; the agent's next ``receive`` (or ``send``) raises ``Refused`` with the same code and
  message, after any message the handler sent before refusing.
* **Cancellation.** Cancelling a pending ``receive`` on an agent's end loses no message: the
  next ``receive`` returns it (a coordinator's handler reads in one task for the whole
  session). Cancelling a pending ``send`` leaves the message undelivered or delivered,
  never torn.
* **One reader, one writer.** At most one task receives and one task sends on an end at a
  time; a session is a reader task and a writer task.

All errors derive from ``ChannelError``; callers need not catch transport-specific ones
(``grpc.aio.AioRpcError``, ``OSError``). ``Dialer.connect`` raises ``ChannelBroken`` for a
coordinator it cannot reach.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb

S = TypeVar("S")
R = TypeVar("R")


class ChannelError(Exception):
    """Any failure of a channel."""


class ChannelClosed(ChannelError):
    """This end was closed with ``aclose()`` before the call."""


class EndOfChannel(ChannelError):
    """The peer closed its end cleanly; everything it sent has been received."""


class ChannelBroken(ChannelError):
    """The peer vanished or could not be reached (no clean close)."""


class RefusalCode(enum.Enum):
    """Why a coordinator refused a session (the gRPC status names, for the wire)."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAVAILABLE = "UNAVAILABLE"


class Refused(ChannelError):
    """The coordinator ended the session with a reason (raised by a handler to refuse)."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class Channel(abc.ABC, Generic[S, R]):
    """One end of a session: sends ``S``, receives ``R``. See the module docstring."""

    @abc.abstractmethod
    async def send(self, msg: S) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> R: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    async def __aiter__(self) -> AsyncIterator[R]:
        """Every message until the peer closes (``EndOfChannel`` ends the iteration; any
        other error propagates)."""
        while True:
            try:
                msg = await self.receive()
            except EndOfChannel:
                return
            yield msg


AgentEnd = Channel[pb.AgentMessage, pb.CoordinatorMessage]
CoordinatorEnd = Channel[pb.CoordinatorMessage, pb.AgentMessage]

#: Serves one accepted session: the authenticated node id and the coordinator's end. Its
#: return closes the session; ``Refused`` ends it with a reason the agent sees.
SessionHandler = Callable[[str, CoordinatorEnd], Awaitable[None]]


class Dialer(abc.ABC):
    """How an agent reaches a coordinator (credentials and transport are the dialer's)."""

    @abc.abstractmethod
    def connect(self, target: str) -> AbstractAsyncContextManager[AgentEnd]:
        """A session with the coordinator at ``target``, closed when the context exits."""
