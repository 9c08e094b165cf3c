"""Node-to-node calls of the object store, over HTTP on the cluster's mutual TLS.

Both ends present node certificates issued by the cluster CA (``cloudless.security``). The
server serves only peers whose SPIFFE ID is a node it knows (``allowed``); the client checks
that the server it reached is the node it meant (SPIFFE ID ``spiffe://<td>/node/<name>``).

Calls: ``merge`` rows into a table (answering each row's state before and after), read one
row (``entry``), read a ``range`` of a partition's rows, ``put_block`` (hash-checked on
arrival) and ``get_block``, ``batch`` (blocks, row merges and row reads of one round in one
call: a PUT makes one call per peer per round), and the hash-tree comparison calls of
``treesync.py``. Metadata travels as JSON, blocks as raw bytes.

The two calls of a PUT's rounds, ``merge`` and ``batch`` (when its body is at most
``STREAM_MAX``), go over the peer's *call stream* when it has one: one WebSocket per peer on
the same port and mutual TLS, opened on first use, the calls multiplexed on it (a call and
its answer cost about half an HTTP request's round trip). A peer without it, or a stream that
broke, gets the same call over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp import web

from cloudless.lib.waits import ended, within
from cloudless.objectstore import treesync
from cloudless.objectstore.blocks import MissingBlock, block_hash
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.local import LocalStore
from cloudless.objectstore.metadb import DiskFull
from cloudless.objectstore.records import OBJECTS, listed

if TYPE_CHECKING:
    from cloudless.objectstore.handoff import HintStore
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import SpiffeId
from cloudless.security.tls import peer_identity_from_ssl

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20
JSON = {"Content-Type": "application/json"}
BINARY = {"Content-Type": "application/octet-stream"}
CALLS_PATH = "/rpc/calls"
STREAM_MAX = 64 << 10
"""Calls whose body is at most this go over the call stream; larger ones (a batch with a
big block) over HTTP, whose body streams instead of sitting whole in one frame."""
CALL_MERGE, CALL_BATCH = 1, 2
STREAM_RETRY = 30.0
"""Seconds a peer whose call stream could not be opened is called over HTTP only."""
STREAM_OPEN = 1.0
"""Seconds to open a call stream (connection, TLS, upgrade): as long as an HTTP call waits
to connect, so a peer cut off costs no more with the stream than without it."""


class PeerError(Exception):
    """A peer could not be reached or refused; the message names the peer and why."""


_IDENTITIES: dict[bytes, SpiffeId] = {}
"""Node certificates already parsed (DER -> SPIFFE ID): parsing one costs about as much as
a small call itself, and a node talks to the same few peers all the time."""


def identity(ssl_obj: Any) -> SpiffeId:
    """The SPIFFE ID in the peer's certificate of a TLS connection (``PermissionDenied``
    when it has none). The chain was verified by the handshake; this only reads the ID."""
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    if not der:
        return peer_identity_from_ssl(None)  # raises, naming the problem
    sid = _IDENTITIES.get(der)
    if sid is None:
        sid = peer_identity_from_ssl(ssl_obj)
        if len(_IDENTITIES) >= 1024:
            _IDENTITIES.clear()
        _IDENTITIES[der] = sid
    return sid


def row_out(e: Entry) -> list[Any]:
    return [e.timestamp, e.writer, None if e.value is None else base64.b64encode(e.value).decode()]


def row_in(r: list[Any]) -> Entry:
    return Entry(int(r[0]), str(r[1]), None if r[2] is None else base64.b64decode(r[2]))


class Readable(Protocol):
    """Whether this node's copy may answer reads: of ``partition``, or (None) of all."""

    def __call__(self, partition: int | None = None) -> bool: ...


@dataclass
class BatchRequest:
    """What ``Peer.batch`` sends: ``reads`` ``(table, pk)``, ``rows`` ``(table, pk,
    partition, entry)`` and ``blocks`` ``(hash, bytes)``; the body is packed once however
    many peers it goes to (a 1 MiB block is copied once, not once per peer)."""

    reads: Sequence[tuple[str, str]]
    rows: Sequence[tuple[str, str, int, Entry]]
    blocks: Sequence[tuple[str, bytes]]
    _body: bytes | None = None

    def body(self) -> bytes:
        if self._body is None:
            head = {
                "reads": [list(r) for r in self.reads],
                "rows": [[t, pk, part, *row_out(e)] for t, pk, part, e in self.rows],
            }
            self._body = pack_batch(head, self.blocks)
        return self._body


@dataclass(frozen=True)
class BatchReply:
    """A peer's answer to ``Peer.batch``: each row's (before, after) merge states, and the
    reads' entries, or why the peer refused the reads (its writes still happened)."""

    merged: list[tuple[Entry | None, Entry]]
    reads: list[Entry | None] | None
    reads_refused: str | None


def pack_batch(head: dict[str, Any], blocks: Sequence[tuple[str, bytes]]) -> bytes:
    """A batch body: 4-byte big-endian length of a JSON head (``reads``, ``rows`` and the
    ``blocks`` as ``[hash, size]``), the head, then the blocks' bytes back to back (raw: no
    base64 for a 1 MiB block)."""
    meta = json.dumps({**head, "blocks": [[h, len(d)] for h, d in blocks]}).encode()
    return b"".join([len(meta).to_bytes(4, "big"), meta, *(d for _, d in blocks)])


def unpack_batch(body: bytes) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """``pack_batch``'s (head, blocks); ``ValueError`` naming what does not add up."""
    if len(body) < 4:
        raise ValueError("shorter than its 4-byte length prefix")
    n = int.from_bytes(body[:4], "big")
    if 4 + n > len(body):
        raise ValueError(f"head of {n} bytes runs past the body's {len(body)}")
    try:
        head = json.loads(body[4 : 4 + n])
        sizes = [(str(h), int(size)) for h, size in head["blocks"]]
        if not isinstance(head["reads"], list) or not isinstance(head["rows"], list):
            raise TypeError("reads and rows must be lists")
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"head: {e!r}") from None
    blocks: list[tuple[str, bytes]] = []
    at = 4 + n
    for h, size in sizes:
        if size < 0 or at + size > len(body):
            raise ValueError(f"block {h} of {size} bytes runs past the body")
        blocks.append((h, body[at : at + size]))
        at += size
    if at != len(body):
        raise ValueError(f"{len(body) - at} bytes after the last block")
    return head, blocks


class BadCall(Exception):
    """A peer's call this node cannot read (answered 400, naming the problem)."""


_UNREADABLE = (KeyError, TypeError, ValueError, IndexError, AttributeError)


@contextlib.contextmanager
def _reading(call: web.Request | str) -> Iterator[None]:
    """Wraps the reading of a call (its body, names and numbers): what goes wrong there is
    the caller's ``BadCall``. What goes wrong after, while acting on it, is this node's own
    error (a 500, logged), never the caller's fault. ``call``: the HTTP request, or what
    to call the call in the message."""
    try:
        yield
    except _UNREADABLE as e:
        what = call if isinstance(call, str) else f"{call.method} {call.path} request"
        raise BadCall(f"bad {what}: {type(e).__name__}: {e}") from None


class RpcServer:
    """Serves this node's ``LocalStore`` to its peers. Every handler reads the whole call
    first (``_reading``), then acts: a bad call changes nothing."""

    def __init__(
        self,
        local: LocalStore,
        allowed: Callable[[SpiffeId], bool],
        hints: HintStore | None = None,
        readable: Readable = lambda partition=None: True,
    ) -> None:
        self.local = local
        self.allowed = allowed
        self.hints = hints
        self.readable = readable
        self._streams: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._authorize])
        app.router.add_post("/rpc/merge", self.merge)
        app.router.add_post("/rpc/batch", self.batch)
        app.router.add_post("/rpc/entry", self.entry)
        app.router.add_post("/rpc/range", self.range)
        app.router.add_post("/rpc/partition", self.partition)
        app.router.add_put("/rpc/block/{h}", self.put_block)
        app.router.add_get("/rpc/block/{h}", self.get_block)
        app.router.add_post("/rpc/hint", self.hint)
        app.router.add_put("/rpc/hintblock/{target}/{h}", self.hint_block)
        app.router.add_post("/rpc/tree/{call}", self.tree)
        app.router.add_post("/rpc/forget", self.forget)
        app.router.add_get(CALLS_PATH, self.calls)
        app.on_shutdown.append(self._close_streams)
        return app

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport else None
        try:
            peer = identity(ssl_obj)
        except PermissionDenied as e:
            return web.json_response({"error": str(e)}, status=403)
        if not self.allowed(peer):
            return web.json_response({"error": f"{peer} is not a storage peer"}, status=403)
        try:
            resp: web.StreamResponse = await handler(request)
        except BadCall as e:
            return web.json_response({"error": str(e)}, status=400)
        except DiskFull as e:
            self.local.disk_full(e)
            return web.json_response({"error": str(e)}, status=507)
        except ConnectionResetError as e:  # the peer went away mid-call (killed, gave up)
            log.debug("%s %s from %s: connection lost: %s", request.method, request.path, peer, e)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=400, text="the peer went away")  # never sent
        return resp

    async def merge(self, request: web.Request) -> web.Response:
        return web.json_response(self._merge(await request.read()))

    def _merge(self, raw: bytes) -> dict[str, Any]:
        """Merge rows; answers each row's state before and after (``[before|null, after]``)."""
        with _reading("merge call"):
            body = json.loads(raw)
            table = body["table"]
            self.local.replicated(table)
            # every row read first (a bad one refuses the whole call), then merged in one commit
            rows = [(table, str(pk), int(part), row_in(row)) for pk, part, *row in body["rows"]]
        out = [
            [None if before is None else row_out(before), row_out(after)]
            for before, after in self.local.apply_many(rows)
        ]
        return {"ok": True, "rows": out}

    async def batch(self, request: web.Request) -> web.Response:
        return web.json_response(await self._batch(await request.read()))

    async def _batch(self, raw: bytes) -> dict[str, Any]:
        """Blocks, then rows, then reads of one round (``pack_batch``'s framing): the blocks
        hash-checked and stored, the rows merged in one transaction (each row's state before
        and after answered), the reads answered unless this node is catching up (then
        ``reads_refused`` says why; the writes still count)."""
        with _reading("batch"):
            head, blobs = unpack_batch(raw)
            rows = [(str(t), str(pk), int(part), row_in(r)) for t, pk, part, *r in head["rows"]]
            reads = [(str(t), str(pk)) for t, pk in head["reads"]]
            for t in {r[0] for r in rows} | {t for t, _ in reads}:
                self.local.replicated(t)  # a bad table name fails here, before any write
        for h, data in blobs:
            if block_hash(data) != h:
                raise BadCall(f"bad batch: block {h}: body does not hash to it")
        for h, data in blobs:
            await self.local.blocks.write(h, data)
        merged = self.local.apply_many(rows) if rows else []
        out: dict[str, Any] = {
            "rows": [[None if b is None else row_out(b), row_out(a)] for b, a in merged]
        }
        if reads:
            if self.readable():
                entries = [self.local.replicated(t).entry(pk) for t, pk in reads]
                out["reads"] = [None if e is None else row_out(e) for e in entries]
            else:
                out["reads_refused"] = f"{self.local.writer} is catching up after downtime"
        return out

    async def calls(self, request: web.Request) -> web.WebSocketResponse:
        """The call stream (``CALLS_PATH``): a WebSocket on which the peer sends ``merge``
        and ``batch`` calls as binary messages ``<4-byte id><1-byte call><body>`` (the
        body as over HTTP) and gets ``<id><1-byte status><answer>`` back, in any order:
        status 0 and the JSON answer, 1 (the call was bad: what HTTP answers 400) or 2
        (this node failed: 500) and a message. Calls run concurrently, as HTTP requests
        would. The peer's certificate was checked when the stream opened (``_authorize``);
        that it is still a storage peer is checked again before each call, and a peer that
        no longer is loses its stream."""
        transport = request.transport
        peer = identity(transport.get_extra_info("ssl_object") if transport else None)
        ws = web.WebSocketResponse(max_msg_size=STREAM_MAX + 5, autoping=True)
        await ws.prepare(request)  # a peer that stopped waiting: see _authorize
        self._streams.add(ws)
        running: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or len(msg.data) < 5:
                    code = aiohttp.WSCloseCode.UNSUPPORTED_DATA
                    await ws.close(code=code, message=b"a call stream carries binary calls")
                    break
                if not self.allowed(peer):
                    code = aiohttp.WSCloseCode.POLICY_VIOLATION
                    await ws.close(code=code, message=f"{peer} is not a storage peer".encode())
                    break
                task = asyncio.create_task(self._stream_call(ws, msg.data))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            self._streams.discard(ws)
        return ws

    async def _close_streams(self, app: web.Application) -> None:
        """On shutdown: the open streams end (their handlers would hold the shutdown), and
        their peers make their calls over HTTP, which no longer answers either."""
        for ws in list(self._streams):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"node shutting down")

    async def _stream_call(self, ws: web.WebSocketResponse, frame: bytes) -> None:
        call, op, body = frame[:4], frame[4], frame[5:]
        try:
            if op == CALL_MERGE:
                answer = json.dumps(self._merge(body)).encode()
            elif op == CALL_BATCH:
                answer = json.dumps(await self._batch(body)).encode()
            else:
                raise BadCall(f"bad call stream frame: no call {op}")
            status = 0
        except BadCall as e:
            status, answer = 1, str(e).encode()
        except DiskFull as e:
            self.local.disk_full(e)
            status, answer = 2, str(e).encode()
        except Exception:
            log.exception("call %d on the call stream failed", op)
            status, answer = 2, b"internal error"
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):  # the peer went away
                await ws.send_bytes(call + bytes([status]) + answer)

    def _catching_up(self, partition: object = None) -> web.Response | None:
        """503 while this node's copy (of ``partition``, when the caller names it) may be
        stale."""
        part = partition if isinstance(partition, int) else None
        if self.readable(part):
            return None
        what = "" if part is None else f" of partition {part}"
        msg = f"{self.local.writer} is catching up after downtime: not serving reads{what} yet"
        return web.json_response({"error": msg}, status=503)

    async def entry(self, request: web.Request) -> web.Response:
        with _reading(request):
            body = await request.json()
            part = body.get("partition")
            table = self.local.replicated(body["table"])
            pk = str(body["pk"])
        if (refused := self._catching_up(part)) is not None:
            return refused
        e = table.entry(pk)
        return web.json_response({"row": None if e is None else row_out(e)})

    async def range(self, request: web.Request) -> web.Response:
        with _reading(request):
            b = await request.json()
            part = b.get("partition")
            table = self.local.replicated(b["table"])
            start, prefix, include = str(b["start"]), str(b["prefix"]), bool(b["include"])
            limit = int(b["limit"])
            shallow = b.get("shallow", False) is True
            if shallow and b["table"] != OBJECTS:
                raise ValueError(f"shallow: only {OBJECTS} rows have bodies to leave out")
        if (refused := self._catching_up(part)) is not None:
            return refused
        rows = table.range(start, prefix=prefix, limit=limit, include_start=include, heads=shallow)
        if shallow:  # heads; a record of the earlier form carries its body in the JSON
            rows = [(pk, replace(e, value=listed(e.value)) if e.value else e) for pk, e in rows]
        return web.json_response({"rows": [[pk, *row_out(e)] for pk, e in rows]})

    async def partition(self, request: web.Request) -> web.Response:
        with _reading(request):
            b = await request.json()
            table = self.local.replicated(b["table"])
            part, after, limit = int(b["partition"]), str(b["after"]), int(b["limit"])
        rows = table.page(part, after, limit)
        return web.json_response({"rows": [[pk, *row_out(e)] for pk, e in rows]})

    async def tree(self, request: web.Request) -> web.Response:
        with _reading(request):
            call = treesync.read_call(self.local, request.match_info["call"], await request.json())
        return web.json_response(treesync.answer(self.local, call))

    async def forget(self, request: web.Request) -> web.Response:
        with _reading(request):
            b = await request.json()
            table = self.local.replicated(b["table"])
            rows = [(str(pk), row_in([ts, w, None])) for pk, ts, w in b["rows"]]
        n = sum(table.forget(pk, tombstone) for pk, tombstone in rows)
        return web.json_response({"forgotten": n})

    async def put_block(self, request: web.Request) -> web.Response:
        h = request.match_info["h"]
        data = await request.read()
        if block_hash(data) != h:
            return web.json_response({"error": f"block {h}: body does not hash to it"}, status=400)
        await self.local.blocks.write(h, data)
        return web.json_response({"ok": True})

    async def hint(self, request: web.Request) -> web.Response:
        if self.hints is None:
            return web.json_response({"error": "this node keeps no hints"}, status=409)
        with _reading(request):
            body = await request.json()
            table, target = str(body["table"]), str(body["target"])
            self.local.replicated(table)
            rows = [(str(pk), int(part), row_in(row)) for pk, part, *row in body["rows"]]
        for pk, part, e in rows:
            self.hints.add(target, table, pk, part, e)
        return web.json_response({"ok": True})

    async def hint_block(self, request: web.Request) -> web.Response:
        if self.hints is None:
            return web.json_response({"error": "this node keeps no hints"}, status=409)
        h = request.match_info["h"]
        data = await request.read()
        if block_hash(data) != h:
            return web.json_response({"error": f"block {h}: body does not hash to it"}, status=400)
        await self.hints.add_block(request.match_info["target"], h, data)
        return web.json_response({"ok": True})

    async def get_block(self, request: web.Request) -> web.Response:
        try:
            data = await self.local.blocks.read(request.match_info["h"])
        except MissingBlock as e:
            return web.json_response({"error": str(e)}, status=404)
        return web.Response(body=data)


class _CallStream:
    """A peer's call stream (``RpcServer.calls``), opened on first use and again after it
    closed. ``call`` answers None whenever the stream is not there (the peer predates it, it
    could not be opened in the last ``STREAM_RETRY`` seconds, or it broke before answering):
    the caller then makes the call over HTTP. Both calls sent on it, ``merge`` and ``batch``,
    are idempotent, so a call the stream lost may be made again."""

    def __init__(self, peer: Peer, now: Callable[[], float] = time.monotonic) -> None:
        self.peer = peer
        self.now = now
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self._waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._last = 0
        self._closed_until = 0.0

    async def call(self, op: int, body: bytes) -> bytes | None:
        """The answer to call ``op`` with ``body``, or None (above); ``PeerError`` if the peer
        refused it (400 or 500, as over HTTP) or did not answer in the peer's timeout (the
        stream is closed then: one that stalls is not used again)."""
        if len(body) > STREAM_MAX or self.now() < self._closed_until:
            return None
        ws = await self._open()
        if ws is None:
            return None
        self._last = call = (self._last + 1) % (1 << 32)
        answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[call] = answer
        try:
            await ws.send_bytes(call.to_bytes(4, "big") + bytes([op]) + body)
            status, got = await within(self.peer.timeout.total, answer)
        except TimeoutError:
            await self.close()
            raise PeerError(f"peer {self.peer.name}: {_CALLS.get(op, op)} timed out") from None
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return None
        finally:
            self._waiting.pop(call, None)
        if status == 0:
            return got
        why = got[:300].decode(errors="replace")
        code = 400 if status == 1 else 500
        raise PeerError(f"peer {self.peer.name}: {_CALLS.get(op, op)} answered {code}: {why}")

    async def _open(self) -> aiohttp.ClientWebSocketResponse | None:
        if self._ws is not None and not self._ws.closed:
            return self._ws
        async with self._opening:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self.now() < self._closed_until:
                return None
            peer = self.peer
            try:
                ws = await within(
                    STREAM_OPEN,
                    peer.session.ws_connect(peer.url + CALLS_PATH, max_msg_size=MAX_BODY),
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self._closed_until = self.now() + STREAM_RETRY
                log.debug("peer %s: no call stream (%s): calls go over HTTP", peer.name, e)
                return None
            try:
                who: SpiffeId | None = identity(ws.get_extra_info("ssl_object"))
            except PermissionDenied:  # no certificate, or no SPIFFE ID in it
                who = None
            if who != peer.expect:
                await ws.close()
                raise PeerError(f"peer {peer.name}: server is not {peer.expect}")
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            return ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Hands each answer to its call; when the stream ends, its unanswered calls fail
        (their callers make them again over HTTP)."""
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and len(msg.data) >= 5:
                    waiting = self._waiting.get(int.from_bytes(msg.data[:4], "big"))
                    if waiting is not None and not waiting.done():
                        waiting.set_result((msg.data[4], msg.data[5:]))
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:
            log.debug("peer %s: call stream lost: %s", self.peer.name, e)
        finally:
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_exception(ConnectionResetError("the call stream closed"))

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        reader, self._reader = self._reader, None
        if ws is not None:
            await ws.close()
        if reader is not None:
            await ended(reader)


_CALLS = {CALL_MERGE: "merge", CALL_BATCH: "batch"}


class Peer(treesync.TreeCalls):
    """Calls to one remote node: ``merge`` and small ``batch`` calls over its call stream
    (one WebSocket, calls multiplexed: about half an HTTP request's round trip), everything
    else, and those when there is no stream, over HTTP."""

    def __init__(
        self,
        name: str,
        url: str,
        session: aiohttp.ClientSession,
        expect: SpiffeId,
        *,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.url = url
        self.session = session
        self.expect = expect
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=1.0)
        self.stream = _CallStream(self)

    async def close(self) -> None:
        """Close the call stream (the session is the caller's)."""
        await self.stream.close()

    def _check(self, resp: aiohttp.ClientResponse) -> None:
        """The server must be the node we meant. aiohttp releases a connection as soon as a
        small body is in, so the transport is taken from the response's protocol then."""
        conn = resp.connection
        transport = conn.transport if conn else None
        if transport is None:
            transport = getattr(getattr(resp, "_protocol", None), "transport", None)
        ssl_obj = transport.get_extra_info("ssl_object") if transport else None
        if ssl_obj is None:
            raise PeerError(f"peer {self.name}: cannot see the server's certificate")
        if identity(ssl_obj) != self.expect:
            raise PeerError(f"peer {self.name}: server is not {self.expect}")

    async def _post(
        self,
        path: str,
        sent: bytes,
        *,
        what: str = "",
        headers: dict[str, str] = JSON,
        absent_ok: bool = False,
    ) -> bytes | None:
        """POST ``sent`` to ``path`` on the peer and return the answer's body; None instead of
        a 404 when ``absent_ok`` (a peer whose code predates the call). ``what`` names the
        call in errors (default: the path)."""
        what = what or path
        try:
            async with self.session.post(
                self.url + path, data=sent, headers=headers, timeout=self.timeout
            ) as r:
                self._check(r)
                if r.status == 404 and absent_ok:
                    return None
                if r.status != 200:
                    why = (await r.read())[:300].decode(errors="replace")
                    raise PeerError(f"peer {self.name}: {what} answered {r.status}: {why}")
                return await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerError(f"peer {self.name}: {type(e).__name__}: {e}") from None

    def _decode(self, what: str, sent: bytes, got: bytes) -> Any:
        """A call's JSON answer, counted with what was sent (``treesync.METER``)."""
        treesync.count(len(sent), len(got))
        try:
            return json.loads(got)
        except ValueError:
            raise PeerError(f"peer {self.name}: {what} answered no JSON") from None

    async def _json(self, path: str, body: dict[str, Any]) -> Any:
        sent = json.dumps(body).encode()
        got = await self._post(path, sent)
        assert got is not None  # only absent_ok gives None
        return self._decode(path, sent, got)

    async def _call(self, call: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self._json(f"/rpc/tree/{call}", body)
        return out

    async def merge(
        self, table: str, rows: list[tuple[str, int, Entry]]
    ) -> list[tuple[Entry | None, Entry]] | None:
        """Merge ``rows`` on the peer; each row's state there before and after (None from a
        peer that does not report them)."""
        body = {"table": table, "rows": [[pk, part, *row_out(e)] for pk, part, e in rows]}
        sent = json.dumps(body).encode()
        got = await self.stream.call(CALL_MERGE, sent)
        if got is None:
            got = await self._post("/rpc/merge", sent)
            assert got is not None  # only absent_ok gives None
        answer = self._decode("merge", sent, got)
        if "rows" not in answer:
            return None
        return [(None if b is None else row_in(b), row_in(a)) for b, a in answer["rows"]]

    async def batch(self, req: BatchRequest) -> BatchReply:
        """One round's work on the peer in one call: store the blocks, merge the rows, read
        the reads of ``req``. A peer without the batch call gets the separate calls."""
        reads, rows, blocks = req.reads, req.rows, req.blocks
        sent = req.body()
        got = await self.stream.call(CALL_BATCH, sent)
        if got is None:
            got = await self._post("/rpc/batch", sent, what="batch", headers=BINARY, absent_ok=True)
        if got is None:
            return await self._separately(reads, rows, blocks)
        treesync.count(len(sent), len(got))
        try:
            answer = json.loads(got)
            merged = [(None if b is None else row_in(b), row_in(a)) for b, a in answer["rows"]]
            refused = answer.get("reads_refused")
            if refused is not None:
                return BatchReply(merged, None, f"peer {self.name}: {refused}")
            got_reads = [None if x is None else row_in(x) for x in answer.get("reads", [])]
        except (ValueError, KeyError, TypeError, IndexError):
            raise PeerError(f"peer {self.name}: batch answered no valid JSON") from None
        if len(merged) != len(rows) or len(got_reads) != len(reads):
            raise PeerError(f"peer {self.name}: batch answered the wrong number of items")
        return BatchReply(merged, got_reads, None)

    async def _separately(
        self,
        reads: Sequence[tuple[str, str]],
        rows: Sequence[tuple[str, str, int, Entry]],
        blocks: Sequence[tuple[str, bytes]],
    ) -> BatchReply:
        for h, data in blocks:
            await self.put_block(h, data)
        merged: list[tuple[Entry | None, Entry]] = []
        for t, pk, part, e in rows:
            reply = await self.merge(t, [(pk, part, e)])
            merged.append((None, e) if reply is None else reply[0])
        try:
            got = [await self.entry(t, pk) for t, pk in reads]
        except PeerError as e:
            return BatchReply(merged, None, str(e))
        return BatchReply(merged, got, None)

    async def entry(self, table: str, pk: str, partition: int | None = None) -> Entry | None:
        """The peer's row (``partition``: the row's, so a peer catching up on other
        partitions can answer)."""
        body: dict[str, Any] = {"table": table, "pk": pk}
        if partition is not None:
            body["partition"] = partition
        r = (await self._json("/rpc/entry", body))["row"]
        return None if r is None else row_in(r)

    async def range(
        self,
        table: str,
        start: str,
        prefix: str,
        limit: int,
        include: bool,
        partition: int | None = None,
        *,
        shallow: bool = False,
    ) -> list[tuple[str, Entry]]:
        """``shallow``: object records without their inline bodies (``records.listed``)."""
        body: dict[str, Any] = {"table": table, "start": start, "prefix": prefix, "limit": limit}
        if partition is not None:
            body["partition"] = partition
        if shallow:
            body["shallow"] = True
        rows = (await self._json("/rpc/range", {**body, "include": include}))["rows"]
        return [(r[0], row_in(r[1:])) for r in rows]

    async def partition_page(
        self, table: str, partition: int, after: str, limit: int
    ) -> list[tuple[str, Entry]]:
        body = {"table": table, "partition": partition, "after": after, "limit": limit}
        rows = (await self._json("/rpc/partition", body))["rows"]
        return [(r[0], row_in(r[1:])) for r in rows]

    async def forget(self, table: str, rows: list[tuple[str, Entry]]) -> int:
        body = [[pk, e.timestamp, e.writer] for pk, e in rows]
        return int((await self._json("/rpc/forget", {"table": table, "rows": body}))["forgotten"])

    async def hint(self, target: str, table: str, rows: list[tuple[str, int, Entry]]) -> None:
        body = [[pk, part, *row_out(e)] for pk, part, e in rows]
        await self._json("/rpc/hint", {"target": target, "table": table, "rows": body})

    async def put_block(self, h: str, data: bytes, *, for_node: str | None = None) -> None:
        path = f"/rpc/block/{h}" if for_node is None else f"/rpc/hintblock/{for_node}/{h}"
        try:
            async with self.session.put(self.url + path, data=data, timeout=self.timeout) as r:
                self._check(r)
                if r.status != 200:
                    raise PeerError(f"peer {self.name}: block {h} refused ({r.status})")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerError(f"peer {self.name}: {type(e).__name__}: {e}") from None

    async def get_block(self, h: str) -> bytes:
        try:
            async with self.session.get(f"{self.url}/rpc/block/{h}", timeout=self.timeout) as r:
                self._check(r)
                if r.status == 404:
                    raise MissingBlock(f"block {h} is not on {self.name}")
                if r.status != 200:
                    raise PeerError(f"peer {self.name}: block {h}: {r.status}")
                data = await r.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise PeerError(f"peer {self.name}: {type(e).__name__}: {e}") from None
        treesync.count(0, len(data))
        return data


def session(client_ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ctx, limit=64))
