"""A small HTTP/1.1 client on asyncio streams: just what the registry protocol needs.

Keep-alive connections are pooled per origin; bodies are streamed (``Content-Length`` or
chunked). TLS verifies certificates against the system store or a given CA file. No proxies,
no HTTP/2, no cookies.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cloudless.lib.waits import within

_LIMIT = 1 << 20  # stream buffer; also the largest header block we accept


class HttpError(Exception):
    """The server could not be reached or spoke broken HTTP (not an HTTP error status)."""


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    url: str
    _conn: _Conn | None
    _client: HttpClient
    _remaining: int | None = None  # None: chunked or read-until-close
    _chunked: bool = False
    _done: bool = False
    _chunk_left: int = 0
    _head: bool = False
    _keep: bool = True

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    async def read(self) -> bytes:
        parts = [c async for c in self.iter_chunks()]
        return b"".join(parts)

    async def iter_chunks(self, size: int = 1 << 20) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._read_some(size)
            if not chunk:
                return
            yield chunk

    async def _read_some(self, size: int) -> bytes:
        if self._done or self._conn is None:
            return b""
        r = self._conn.reader
        try:
            if self._head:
                data = b""
            elif self._chunked:
                if self._chunk_left == 0:
                    line = await r.readline()
                    n = int(line.split(b";")[0].strip() or b"0", 16)
                    if n == 0:
                        while (await r.readline()) not in (b"\r\n", b"\n", b""):
                            pass
                        data = b""
                    else:
                        self._chunk_left = n
                if self._chunk_left:
                    data = await r.read(min(size, self._chunk_left))
                    if not data:
                        raise HttpError(f"{self.url}: connection closed mid-body")
                    self._chunk_left -= len(data)
                    if self._chunk_left == 0:
                        await r.readexactly(2)
                    return data
            elif self._remaining is None:
                data = await r.read(size)
                if data:
                    return data
                self._keep = False
            elif self._remaining > 0:
                data = await r.read(min(size, self._remaining))
                if not data:
                    raise HttpError(f"{self.url}: connection closed mid-body")
                self._remaining -= len(data)
                if self._remaining:
                    return data
                self._finish()
                return data
            else:
                data = b""
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            self._keep = False
            self.close()
            raise HttpError(f"{self.url}: {e}") from e
        self._finish()
        return data

    def _finish(self) -> None:
        self._done = True
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self._keep:
                self._client._release(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Discard the rest of the body (the connection is not reused)."""
        if self._conn is not None and not self._done:
            self._conn.close()
            self._conn = None
        self._done = True


@dataclass
class _Conn:
    origin: tuple[str, str, int]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass
class HttpClient:
    """``ssl_for(host)`` returns the TLS context for an https origin (default: system CAs)."""

    ssl_contexts: Mapping[str, ssl.SSLContext] = field(default_factory=dict)
    timeout: float = 30.0
    _pool: dict[tuple[str, str, int], list[_Conn]] = field(default_factory=dict)

    def _ssl(self, host: str, port: int) -> ssl.SSLContext:
        return (
            self.ssl_contexts.get(f"{host}:{port}")
            or self.ssl_contexts.get(host)
            or ssl.create_default_context()
        )

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise HttpError(f"unsupported URL {url!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        origin = (u.scheme, u.hostname, port)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host_hdr = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host_hdr}", "User-Agent: cloudless"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for attempt in (0, 1):
            conn = self._take(origin)
            reused = conn is not None
            try:
                if conn is None:
                    conn = await self._connect(origin)
                conn.writer.write(head + (body or b""))
                await conn.writer.drain()
                return await within(self.timeout, self._read_head(conn, method, url))
            except (OSError, asyncio.IncompleteReadError, HttpError, TimeoutError) as e:
                if conn is not None:
                    conn.close()
                if reused and attempt == 0:
                    continue  # a pooled connection went stale; retry once on a fresh one
                raise HttpError(f"{method} {url}: {e or type(e).__name__}") from e
        raise AssertionError("unreachable")

    async def _connect(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        ctx = self._ssl(host, port) if scheme == "https" else None
        try:
            reader, writer = await within(
                self.timeout, asyncio.open_connection(host, port, ssl=ctx, limit=_LIMIT)
            )
        except ssl.SSLCertVerificationError as e:
            msg = f"TLS certificate of {host}:{port} not trusted: {e.verify_message}"
            raise HttpError(msg) from e
        return _Conn(origin, reader, writer)

    async def _read_head(self, conn: _Conn, method: str, url: str) -> Response:
        status_line = await conn.reader.readline()
        if not status_line:
            raise HttpError("connection closed before a response")
        parts = status_line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise HttpError(f"not an HTTP response: {status_line[:60]!r}")
        headers: dict[str, str] = {}
        while True:
            line = await conn.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        status = int(parts[1])
        resp = Response(status, parts[2] if len(parts) > 2 else "", headers, url, conn, self)
        resp._keep = headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            resp._head = True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            resp._chunked = True
        elif "content-length" in headers:
            resp._remaining = int(headers["content-length"])
        else:
            resp._keep = False
        if resp._head or resp._remaining == 0:
            resp._finish()
        return resp

    def _take(self, origin: tuple[str, str, int]) -> _Conn | None:
        conns = self._pool.get(origin)
        while conns:
            c = conns.pop()
            if not c.reader.at_eof() and not c.writer.is_closing():
                return c
            c.close()
        return None

    def _release(self, conn: _Conn) -> None:
        self._pool.setdefault(conn.origin, []).append(conn)

    async def aclose(self) -> None:
        for conns in self._pool.values():
            for c in conns:
                c.close()
        self._pool.clear()
