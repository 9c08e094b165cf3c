"""The channel contract over gRPC: the ``AgentControl.Connect`` stream with mutual TLS.

The agent's end is a bidirectional call (``call.write`` waits on HTTP/2 flow control: that is
the backpressure), read by one task so that a cancelled ``receive`` cannot cancel the call;
closing the end cancels the call. The
coordinator's end wraps the servicer context (``context.read``/``context.write``); a
handler's ``Refused`` becomes the call's status (its code and message) and is marked in the
trailing metadata, so the agent tells a refusal from a transport failure with the same code.
Every gRPC error is mapped to the channel's errors; nothing gRPC-specific escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import grpc

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.lib.waits import ended
from cloudless.transport.channel import (
    AgentEnd,
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

REFUSED_KEY = "cloudless-refused"


def _status_error(code: grpc.StatusCode, details: str, refused: bool) -> ChannelError:
    if code is grpc.StatusCode.OK:
        return EndOfChannel("the coordinator ended the session")
    if refused or code.name in ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT"):
        with contextlib.suppress(ValueError):
            return Refused(RefusalCode(code.name), details or "")
    return ChannelBroken(f"{code.name}: {details}")


def _is_refusal(metadata: object) -> bool:
    try:
        return any(k == REFUSED_KEY for k, _ in metadata)  # type: ignore[attr-defined]
    except TypeError:
        return False


class GrpcAgentEnd(AgentEnd):
    """The agent's end: one ``Connect`` call."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        self._call = call
        self.closed = False
        self._inbox: asyncio.Queue[pb.CoordinatorMessage | ChannelError] = asyncio.Queue(1)
        self._pump: asyncio.Future[None] | None = None

    async def _failure(self, e: BaseException | None = None) -> ChannelError:
        if isinstance(e, grpc.aio.AioRpcError):
            code, details, md = e.code(), e.details() or "", e.trailing_metadata()
        else:
            try:
                code = await self._call.code()
                details = await self._call.details() or ""
                md = await self._call.trailing_metadata()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as ee:
                return ChannelBroken(str(ee))
        return _status_error(code, details, _is_refusal(md))

    async def send(self, msg: pb.AgentMessage) -> None:
        if self.closed:
            raise ChannelClosed("send on a closed channel")
        try:
            await self._call.write(msg)
        except grpc.aio.AioRpcError as e:
            raise await self._failure(e) from None
        except asyncio.InvalidStateError:  # the call has ended
            raise await self._failure() from None

    async def receive(self) -> pb.CoordinatorMessage:
        if self.closed:
            raise ChannelClosed("receive on a closed channel")
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._read_all())
        item = await self._inbox.get()
        if isinstance(item, ChannelError):
            self._inbox.put_nowait(item)  # every later receive fails the same way
            raise item
        return item

    async def _read_all(self) -> None:
        """Read the call into ``_inbox`` (one message ahead: flow control still applies).
        Cancelling ``call.read()`` would cancel the call, so a cancelled ``receive`` must
        never cancel a read: this task alone reads."""
        while True:
            try:
                msg = await self._call.read()
            except grpc.aio.AioRpcError as e:
                await self._inbox.put(await self._failure(e))
                return
            except asyncio.InvalidStateError:
                await self._inbox.put(await self._failure())
                return
            if msg is grpc.aio.EOF:
                await self._inbox.put(await self._failure())
                return
            assert isinstance(msg, pb.CoordinatorMessage)
            await self._inbox.put(msg)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._call.cancel()
            if self._pump is not None:
                await ended(self._pump)


class GrpcDialer(Dialer):
    """Dials coordinators with the node's certificate (``credentials()``, asked at every
    connect: a renewed certificate is used from the next session on) and channel options
    (keepalive, server name override)."""

    def __init__(
        self,
        credentials: Callable[[], grpc.ChannelCredentials],
        options: list[tuple[str, object]] | None = None,
    ) -> None:
        self.credentials = credentials
        self.options = options or []

    @contextlib.asynccontextmanager
    async def connect(self, target: str) -> AsyncIterator[AgentEnd]:
        try:
            async with grpc.aio.secure_channel(
                target, self.credentials(), options=self.options
            ) as ch:
                end = GrpcAgentEnd(pbg.AgentControlStub(ch).Connect())
                try:
                    yield end
                finally:
                    await end.aclose()
        except grpc.aio.AioRpcError as e:  # a failure while opening or closing the channel
            raise ChannelBroken(f"{e.code().name}: {e.details()}") from None


class GrpcCoordinatorEnd(CoordinatorEnd):
    """The coordinator's end: the servicer context of one ``Connect`` call."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self._context = context
        self.closed = False

    async def send(self, msg: pb.CoordinatorMessage) -> None:
        if self.closed:
            raise ChannelClosed("send on a closed channel")
        try:
            await self._context.write(msg)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as e:
            raise ChannelBroken(f"the agent's stream ended: {e}") from None

    async def receive(self) -> pb.AgentMessage:
        if self.closed:
            raise ChannelClosed("receive on a closed channel")
        try:
            msg = await self._context.read()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as e:
            raise ChannelBroken(f"the agent's stream ended: {e}") from None
        if msg is grpc.aio.EOF:
            raise EndOfChannel("the agent closed the stream")
        assert isinstance(msg, pb.AgentMessage)
        return msg

    async def aclose(self) -> None:
        self.closed = True


async def serve_connect(
    context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    node_id: str,
    handler: SessionHandler,
) -> None:
    """Serve one ``Connect`` call (already authenticated as ``node_id``) with ``handler``."""
    end = GrpcCoordinatorEnd(context)
    try:
        await handler(node_id, end)
    except Refused as e:
        await context.abort(
            grpc.StatusCode[e.code.value], e.message, trailing_metadata=((REFUSED_KEY, "1"),)
        )
    except ChannelError:
        pass  # the agent's side is gone; there is nobody to tell
    finally:
        await end.aclose()
