"""The small HTTP/1.1 client: keep-alive reuse, stale pooled connections, framing, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cloudless.runtime.oci.http import HttpClient, HttpError


class RawServer:
    """Answers every request with ``body``; counts connections; can drop idle ones."""

    def __init__(self, body: bytes = b"hello") -> None:
        self.body = body
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(w)
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                if head.startswith(b"HEAD"):
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body))
                    w.write(self.body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    def drop_idle(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def stop(self) -> None:
        assert self.server is not None
        self.drop_idle()
        self.server.close()


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    s = RawServer()
    await s.start()
    yield s
    await s.stop()


async def test_keep_alive_reuses_one_connection(server: RawServer) -> None:
    client = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    for _ in range(3):
        resp = await client.request("GET", url)
        assert (resp.status, await resp.read()) == (200, b"hello")
    head = await client.request("HEAD", url)
    assert head.status == 200 and await head.read() == b""  # HEAD has no body to wait for
    assert server.connections == 1
    await client.aclose()


async def test_a_stale_pooled_connection_is_retried_once(server: RawServer) -> None:
    client = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    await (await client.request("GET", url)).read()
    server.drop_idle()  # the server times the idle connection out
    await asyncio.sleep(0.01)
    resp = await client.request("GET", url)
    assert await resp.read() == b"hello"
    assert server.connections == 2
    await client.aclose()


async def test_unreachable_and_bad_urls() -> None:
    client = HttpClient(timeout=2)
    with pytest.raises(HttpError):
        await client.request("GET", "http://127.0.0.1:1/")
    with pytest.raises(HttpError):
        await client.request("GET", "ftp://example/")
