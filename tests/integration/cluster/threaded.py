"""A coordinator (in-memory store, real mTLS HTTPS and gRPC on loopback) running on its own
event loop in a background thread, for synchronous table and Hypothesis tests that send
hundreds of requests to one coordinator.

``raw()`` sends any bytes with any method and returns the status, headers and body as sent
back; ``state()`` is every store key and value outside the event log, to compare before and
after a refused request.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.state.cluster import EVENTS_PREFIX
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.store.tables import ROOT

from .harness import coordinator_config

T = TypeVar("T")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Running:
    def __init__(self, coord: Coordinator, loop: asyncio.AbstractEventLoop, tmp: Path) -> None:
        self.coord = coord
        self.loop = loop
        self.client = Client(ClientConfig.load(tmp / "coord" / "admin" / "config.json"))
        host_port = coord.config.api_url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        anon = ssl.create_default_context(cafile=str(self.client.config.ca_file))
        anon.check_hostname = False
        self.anon_ssl = anon

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        auth: bool = True,
        content_type: str = "application/json",
    ) -> Answer:
        ctx = self.client.ssl if auth else self.anon_ssl
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=30)
        try:
            headers = {"Content-Type": content_type} if body is not None else {}
            try:
                conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (413) before the whole body was sent
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def state(self) -> dict[str, bytes]:
        """Every key under the cluster root except the event and audit logs (refusals are
        events, and every write attempt is audited)."""
        skip = (EVENTS_PREFIX, f"{ROOT}audit/")

        async def read() -> dict[str, bytes]:
            listing = await self.coord.store.list(ROOT)
            return {kv.key: kv.value for kv in listing.kvs if not kv.key.startswith(skip)}

        return self.run(read())


@contextmanager
def running_coordinator(tmp: Path) -> Iterator[Running]:
    coord = Coordinator(coordinator_config(tmp))
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        stop = asyncio.Event()
        box["stop"] = stop
        task = asyncio.create_task(coord.run())
        try:
            await asyncio.wait_for(coord.ready.wait(), 30)
        finally:
            started.set()
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(40) or not coord.ready.is_set():
        raise RuntimeError("the coordinator did not start")
    loop: asyncio.AbstractEventLoop = box["loop"]
    try:
        yield Running(coord, loop, tmp)
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
