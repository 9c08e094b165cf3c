"""The two servers the object-store benchmark compares, each run in its own process.

* baseline: a plain aiohttp file server on the same disk, PUT streams the body to a file
  (temp + rename), GET answers ``web.FileResponse``; no auth;
* baseline_etag: the baseline plus the MD5 of each PUT's body, S3's ETag (in a thread,
  overlapping the receiving and writing): the ceiling of any S3 server's PUT here;
* floor: aiohttp alone (bodies kept in memory), for the 4 KiB workloads: what the HTTP
  layer itself costs per request;
* store: one Cloudless object-store node (R=1, SQLite metadata, blake3 blocks) behind the S3
  API with SigV4 (the client uses presigned URLs).

Each sends ``(port, key_id, secret)`` on its pipe once listening, then serves until killed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import BinaryIO

from aiohttp import web


async def _serve(app: web.Application, conn: Connection) -> None:
    """Serve ``app`` on a loopback port, send ``(port, "", "")`` on ``conn``, run forever."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    conn.send((runner.addresses[0][1], "", ""))
    await asyncio.Event().wait()


Receive = Callable[[web.Request, BinaryIO], Awaitable[Awaitable[str] | None]]
"""Writes a PUT's body to the open file; returns what, once awaited, is the ETag to answer
(None: no ETag). The file server awaits it after its fsync, so a hash can finish meanwhile."""


def _serve_files(root: str, conn: Connection, receive: Receive) -> None:
    """A file server on ``root``: PUT writes the body through ``receive`` to a temp file,
    fsyncs it and renames it into place; GET answers ``web.FileResponse``. Serves for ever."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        name = request.match_info["name"].replace("/", "_")
        tmp = base / f".{name}.tmp"
        with open(tmp, "wb") as f:  # noqa: ASYNC230 (the plainest server: blocking writes)
            etag = await receive(request, f)
            f.flush()
            os.fsync(f.fileno())
        headers = {} if etag is None else {"ETag": f'"{await etag}"'}
        os.replace(tmp, base / name)
        return web.Response(headers=headers)

    async def get(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"].replace("/", "_")
        return web.FileResponse(base / name)

    app = web.Application()
    app.router.add_put("/{name:.+}", put)
    app.router.add_get("/{name:.+}", get)
    asyncio.run(_serve(app, conn))


def run_baseline(root: str, conn: Connection) -> None:
    async def receive(request: web.Request, f: BinaryIO) -> None:
        async for chunk in request.content.iter_chunked(1 << 18):
            f.write(chunk)

    _serve_files(root, conn, receive)


ETAG_WAYS = ("thread", "inline", "thread_1m", "worker", "any")
"""How ``run_baseline_etag`` may arrange the MD5 (``bench.objectstore.ceiling`` runs them
all): in a thread of its own over 256 KiB chunks in order, beside the loop's receiving and
writing (the default); inline in the event loop; in the thread over 1 MiB chunks; in a
worker that both hashes and writes each 1 MiB (the loop only receives); in the thread over
the chunks as they arrive."""


def run_baseline_etag(root: str, conn: Connection, way: str = "thread") -> None:
    """``run_baseline`` that also answers the MD5 of the body as its ETag, as S3 must for a
    single PUT (clients such as rclone check it against their own), computed the ``way``
    given (``ETAG_WAYS``). The default is the least an S3 PUT adds to a file server's, and
    with it the highest store / baseline ratio any S3 server could reach on this machine."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    if way not in ETAG_WAYS:
        raise ValueError(f"MD5 way {way!r}: one of {', '.join(ETAG_WAYS)}")
    hashing = ThreadPoolExecutor(1)  # one thread: its jobs run in the order they came
    size = 1 << 20 if way in ("thread_1m", "worker") else 1 << 18

    async def receive(request: web.Request, f: BinaryIO) -> Awaitable[str]:
        loop = asyncio.get_running_loop()
        md5 = hashlib.md5()
        last: asyncio.Future[None] | None = None

        def both(chunk: bytes) -> None:
            md5.update(chunk)
            f.write(chunk)

        chunks = request.content.iter_any() if way == "any" else request.content.iter_chunked(size)
        async for chunk in chunks:
            if way == "inline":
                md5.update(chunk)
                f.write(chunk)
            elif way == "worker":
                last = loop.run_in_executor(hashing, both, chunk)
            else:
                last = loop.run_in_executor(hashing, md5.update, chunk)
                f.write(chunk)
        if way == "worker" and last is not None:
            await last  # the writes are the worker's: done before the fsync

        async def etag() -> str:
            if last is not None:
                await last
            return md5.hexdigest()

        return etag()

    _serve_files(root, conn, receive)


def run_floor(root: str, conn: Connection) -> None:
    """The least an aiohttp server can do per request: PUT reads the body and keeps it in
    memory, GET answers it from memory; no disk, no auth. What it spends per 4 KiB request
    is the floor under any S3 front built on aiohttp on this machine."""
    held: dict[str, bytes] = {}

    async def put(request: web.Request) -> web.Response:
        held[request.match_info["name"]] = await request.read()
        return web.Response()

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=held[request.match_info["name"]])

    app = web.Application(client_max_size=128 << 20)
    app.router.add_put("/{name:.+}", put)
    app.router.add_get("/{name:.+}", get)
    asyncio.run(_serve(app, conn))


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


def run_store_cold(root: str, conn: Connection) -> None:
    """``run_store`` with nothing held in memory between requests: no small blocks
    (``blocks.SMALL_CACHE_BYTES``), no rows (``metadb.ROW_CACHE_BYTES``), no decoded object
    records. Every GET reads and hashes its block file and reads its row from SQLite, as
    for an object not touched since the node started or pushed out by others."""
    from cloudless.objectstore import blocks, metadb, records

    blocks.SMALL_CACHE_BYTES = 0
    metadb.ROW_CACHE_BYTES = 0
    records._decode_object = records._decode_object.__wrapped__  # type: ignore[attr-defined,assignment]
    run_store(root, conn)


def run_store_from(code: str, root: str, conn: Connection) -> None:
    """``run_store`` with ``cloudless`` imported from the tree at ``code`` (another commit's
    code, e.g. a ``git archive`` of the base of a change, for a before/after run)."""
    import sys

    sys.path.insert(0, code)
    run_store(root, conn)


def _tls(root: Path, name: str) -> tuple[bytes, bytes, bytes]:
    """(cert, key, CA bundle) PEMs written by ``make_tls`` for ``name``."""
    return (
        (root / f"{name}.crt").read_bytes(),
        (root / f"{name}.key").read_bytes(),
        (root / "ca.pem").read_bytes(),
    )


def make_tls(root: Path, names: list[str]) -> None:
    """A throwaway cluster CA and a node certificate per name, as PEM files under ``root``."""
    from cloudless.security.ca import CertificateAuthority
    from cloudless.security.identity import CertKind, SpiffeId

    ca = CertificateAuthority.init(root / "ca", trust_domain="bench.test", root_key_size=2048)
    (root / "ca.pem").write_bytes(ca.bundle_pem)
    for n in names:
        key, cert = ca.issue(
            SpiffeId.node(n, "bench.test"), CertKind.NODE, ip_addresses=("127.0.0.1",)
        )
        (root / f"{n}.crt").write_bytes(cert)
        (root / f"{n}.key").write_bytes(key)


def run_sink(root: str, conn: Connection) -> None:
    """A peer that accepts blocks over mutual TLS and keeps nothing (the network-bound
    ideal's replica: what a replica must receive, no storage work)."""
    from cloudless.security.tls import server_ssl_context

    async def put(request: web.Request) -> web.Response:
        async for _ in request.content.iter_chunked(1 << 18):
            pass
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_put("/{name:.+}", put)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = server_ssl_context(*_tls(Path(root).parent, Path(root).name))
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
        conn.send((runner.addresses[0][1], "", ""))
        await asyncio.Event().wait()

    asyncio.run(main())


def run_fanout(root: str, conn: Connection) -> None:
    """The network-bound ideal of an R=3 PUT through a gateway that holds one copy: plain
    HTTP in from the client, the body forwarded to the two sinks (ports in
    ``<root>/sinks``) over mutual TLS at once, answered when both acknowledged. Every byte
    an R=3 PUT must move crosses the same stacks; nothing is hashed or stored."""
    import aiohttp

    from cloudless.security.tls import client_ssl_context

    base = Path(root)
    ports = [int(p) for p in (base / "sinks").read_text().split()]

    async def main() -> None:
        ctx = client_ssl_context(*_tls(base.parent, "gateway"))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=64))

        async def send(port: int, name: str, data: bytes) -> None:
            async with session.put(f"https://127.0.0.1:{port}/{name}", data=data) as r:
                await r.read()

        async def put(request: web.Request) -> web.Response:
            data = await request.read()
            name = request.match_info["name"]
            await asyncio.gather(*(send(p, name, data) for p in ports))
            return web.Response()

        app = web.Application(client_max_size=8 << 20)
        app.router.add_put("/{name:.+}", put)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        conn.send((runner.addresses[0][1], "", ""))
        await asyncio.Event().wait()

    asyncio.run(main())
