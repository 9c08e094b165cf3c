"""``GrpcLink`` against a real gRPC server process: the link comes up, a kill -9 of the
server is seen as soon as the kernel closes the socket (well inside the election lease), and
the link comes back by itself when a server listens again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator

import grpc
import pytest

from cloudless.coordinator.loops.leader_watch import GrpcLink, leader_link_options
from cloudless.lib.keepalive import Keepalive
from cloudless.lib.net import free_port

pytestmark = pytest.mark.integration

SERVER = """
import asyncio, sys, grpc
async def main():
    s = grpc.aio.server()
    s.add_secure_port("127.0.0.1:" + sys.argv[1], grpc.local_server_credentials())
    await s.start()
    print("up", flush=True)
    await s.wait_for_termination()
asyncio.run(main())
"""


def serve(port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, start_new_session=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == b"up"
    return p


async def next_state(states: AsyncGenerator[bool, None], within: float) -> bool:
    async with asyncio.timeout(within):
        return await anext(states)


async def test_kill9_of_the_server_is_seen_at_once_and_the_link_recovers() -> None:
    port = free_port()
    proc = serve(port)
    link = GrpcLink(grpc.local_channel_credentials(), leader_link_options(Keepalive()))
    try:
        async with contextlib.aclosing(link.states(f"127.0.0.1:{port}")) as states:
            first = await next_state(states, 10)
            if not first:
                assert await next_state(states, 10)  # CONNECTING, then READY
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            assert not await next_state(states, 5)
            seen_after = time.monotonic() - t0
            # the election lease is 3 s; a closed socket must be seen far sooner
            assert seen_after < 1.0, f"kill seen after {seen_after:.2f}s"
            proc = serve(port)
            assert await next_state(states, 10)  # re-made by itself (backoff <= 1 s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
