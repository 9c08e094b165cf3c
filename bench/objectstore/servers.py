"""The two servers the object-store benchmark compares, each run in its own process.

* baseline: a plain aiohttp file server on the same disk, PUT streams the body to a file
  (temp + rename), GET answers ``web.FileResponse``; no auth;
* store: one Cloudless object-store node (R=1, SQLite metadata, blake3 blocks) behind the S3
  API with SigV4 (the client uses presigned URLs).

Each sends ``(port, key_id, secret)`` on its pipe once listening, then serves until killed.
"""

from __future__ import annotations

import asyncio
import os
from multiprocessing.connection import Connection
from pathlib import Path

from aiohttp import web


def run_baseline(root: str, conn: Connection) -> None:
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        name = request.match_info["name"].replace("/", "_")
        tmp = base / f".{name}.tmp"
        with open(tmp, "wb") as f:  # noqa: ASYNC230 (the plainest server: blocking writes)
            async for chunk in request.content.iter_chunked(1 << 18):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, base / name)
        return web.Response()

    async def get(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"].replace("/", "_")
        return web.FileResponse(base / name)

    async def main() -> None:
        app = web.Application()
        app.router.add_put("/{name:.+}", put)
        app.router.add_get("/{name:.+}", get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send((runner.addresses[0][1], "", ""))
        await asyncio.Event().wait()

    asyncio.run(main())


def run_store(root: str, conn: Connection) -> None:
    from cloudless.lib.clock import SystemClock
    from cloudless.objectstore.node import Node
    from cloudless.store.memory import MemoryStore

    async def main() -> None:
        clock = SystemClock()
        node = Node.open("bench", Path(root), MemoryStore(clock), clock)
        key = await node.iam.create_key("bench")
        await node.iam.create_bucket("bench", key.key_id)
        runner = web.AppRunner(node.server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send((runner.addresses[0][1], key.key_id, key.secret))
        await asyncio.Event().wait()

    asyncio.run(main())
