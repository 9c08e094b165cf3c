"""The channel conformance checks (``cloudless.testing.channel_checks``) against both
implementations: in memory, and gRPC with mutual TLS on loopback behind a TCP relay (so a
check can sever a connection under both ends, as a dead link or a killed process does)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.lib.clock import FakeClock, SystemClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.tls import (
    grpc_channel_credentials,
    grpc_channel_options,
    grpc_server_credentials,
    peer_identity_from_grpc,
)
from cloudless.testing.channel_checks import CHECKS, ChannelHarness
from cloudless.transport.channel import Dialer, SessionHandler
from cloudless.transport.grpc_channel import GrpcDialer, serve_connect
from cloudless.transport.memory import MemoryListener, MemoryNetwork


class MemoryHarness(ChannelHarness):
    backlog_limit = 200  # the queue holds 64 messages whatever their size

    def __init__(self) -> None:
        self.network = MemoryNetwork(SystemClock())
        self.listener: MemoryListener | None = None
        self.task: asyncio.Task[None] | None = None
        self.dialers: list[Dialer] = []

    async def start(self, handler: SessionHandler) -> str:
        self.listener = self.network.listener("coord-0", handler)
        self.task = asyncio.create_task(self.listener.run())
        await asyncio.sleep(0)
        return "coord-0"

    def dialer(self, node_id: str) -> Dialer:
        d = self.network.dialer(node_id)
        self.dialers.append(d)
        return d

    async def vanish_server(self) -> None:
        await self.stop()

    async def sever(self) -> None:
        for d in self.dialers:
            for c in list(d.connections):  # type: ignore[attr-defined]
                c.vanish("severed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def unreachable(self) -> str:
        return "nobody"


class _Relay:
    """A TCP relay on loopback; ``sever`` aborts every relayed connection (RST both ways)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.transports: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.transports += [w1, w2]

        async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await r.read(1 << 16):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(copy(r1, w2), copy(r2, w1), return_exceptions=True)

    def sever(self) -> None:
        for w in self.transports:
            w.transport.abort()
        self.transports.clear()

    async def close(self) -> None:
        self.sever()
        if self.server is not None:
            self.server.close()


class _Servicer(pbg.AgentControlServicer):
    def __init__(self, handler: SessionHandler) -> None:
        self.handler = handler

    async def Connect(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:  # type: ignore[override,type-arg]
        node_id = peer_identity_from_grpc(context).name
        await serve_connect(context, node_id, self.handler)


class GrpcHarness(ChannelHarness):
    def __init__(self, ca: CertificateAuthority, server_leaf: tuple[bytes, bytes]) -> None:
        self.ca = ca
        self.server_leaf = server_leaf
        self.server: grpc.aio.Server | None = None
        self.relay: _Relay | None = None

    async def start(self, handler: SessionHandler) -> str:
        self.server = grpc.aio.server()
        pbg.add_AgentControlServicer_to_server(_Servicer(handler), self.server)  # type: ignore[no-untyped-call]
        key, cert = self.server_leaf
        port = self.server.add_secure_port(
            "127.0.0.1:0", grpc_server_credentials(cert, key, self.ca.bundle_pem)
        )
        await self.server.start()
        self.relay = _Relay(port)
        return f"127.0.0.1:{await self.relay.start()}"

    def dialer(self, node_id: str) -> Dialer:
        sid = SpiffeId.node(node_id, self.ca.trust_domain)
        key = new_private_key()
        cert = self.ca.sign_csr(make_csr(key, sid), sid, CertKind.NODE)
        creds = grpc_channel_credentials(cert, key, self.ca.bundle_pem)
        return GrpcDialer(lambda: creds, grpc_channel_options("localhost"))

    async def vanish_server(self) -> None:
        if self.server is not None:
            await self.server.stop(None)

    async def sever(self) -> None:
        if self.relay is not None:
            self.relay.sever()

    async def stop(self) -> None:
        if self.relay is not None:
            await self.relay.close()
        if self.server is not None:
            await self.server.stop(None)

    def unreachable(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def pki(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[CertificateAuthority, tuple[bytes, bytes]]:
    import time

    d: Path = tmp_path_factory.mktemp("pki")
    CertificateAuthority.init(d / "ca", clock=FakeClock(time.time() - 3600), root_key_size=2048)
    ca = CertificateAuthority.load(d / "ca", clock=SystemClock())
    key, cert = ca.issue(
        SpiffeId.service("coordinator"),
        CertKind.SERVICE,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    return ca, (key, cert)


@pytest.fixture(params=["memory", "grpc"])
async def harness(
    request: pytest.FixtureRequest, pki: tuple[CertificateAuthority, tuple[bytes, bytes]]
) -> AsyncIterator[ChannelHarness]:
    h: ChannelHarness = MemoryHarness() if request.param == "memory" else GrpcHarness(*pki)
    try:
        yield h
    finally:
        await h.stop()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
async def test_channel_contract(
    harness: ChannelHarness, check: Callable[[ChannelHarness], Awaitable[None]]
) -> None:
    await check(harness)
