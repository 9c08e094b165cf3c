"""The device's DNS responder: UDP and TCP on one address, answers from a ``DnsIndex``.

Contract:

* A name in the zone is answered from the current index alone (``set_services`` swaps it
  atomically), so answers keep coming while the coordinator is unreachable.
* A name outside the zone is forwarded to ``upstream`` (UDP, ``forward_timeout``) and the
  upstream's answer relayed with the asker's ID; no upstream, or no answer in time: SERVFAIL.
* A packet that does not parse gets FORMERR when it has a DNS header, else nothing. A UDP
  answer over 512 bytes is truncated with TC set (the client retries over TCP).
* ``namespace_of(client_ip)`` names the asker's namespace for short names.
* ``run()`` serves until cancelled, then closes both sockets; forwards run in its TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord

from cloudless.lib.waits import within
from cloudless.network.dns import DnsIndex
from cloudless.network.services import Service

UDP_LIMIT = 512
UDP_READ = 4096
BATCH = 64
CACHE_LIMIT = 10_000
log = logging.getLogger(__name__)


class DnsServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        upstream: tuple[str, int] | None = None,
        namespace_of: Callable[[str], str | None] = lambda ip: None,
        forward_timeout: float = 2.0,
        index: DnsIndex | None = None,
        cache: bool = True,
        sockets: tuple[socket.socket, socket.socket] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.upstream = upstream
        self.namespace_of = namespace_of
        self.forward_timeout = forward_timeout
        self.index = index or DnsIndex([])
        self.ready = asyncio.Event()
        self._sockets = sockets  # pre-bound (UDP, listening TCP), e.g. inside another netns
        # request bytes after the ID (+ asker's namespace) -> reply bytes after the ID, for
        # answers from the index; cleared with every index swap.
        self._cache: dict[tuple[bytes, str | None], bytes] = {}
        self._cache_limit = CACHE_LIMIT if cache else 0
        self._tg: asyncio.TaskGroup | None = None
        self._view: tuple[object, ...] | None = None  # what the index was built from

    def set_services(self, services: Iterable[Service]) -> None:
        """Answer from ``services`` from now on. Cached replies stay while the names answer as
        before (an endpoint moving in a service that has no per-replica names changes none)."""
        services = tuple(services)
        view = tuple(_named(s) for s in services)
        if view == self._view:
            return
        self._view = view
        index = DnsIndex(services, self.index.zone, self.index.ttl)
        if index.same_answers(self.index):
            return
        self.index = index
        self._cache.clear()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            udp, tcp = await self._bind()
            loop.add_reader(udp.fileno(), self._drain, udp)
            self.ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                loop.remove_reader(udp.fileno())
                udp.close()
                tcp.close()
                with contextlib.suppress(Exception):
                    await tcp.wait_closed()
                self.ready.clear()

    async def _bind(self) -> tuple[socket.socket, asyncio.Server]:
        """UDP and TCP on one port (a free one for both when ``port`` is 0)."""
        if self._sockets is not None:
            udp, tcp_sock = self._sockets
            udp.setblocking(False)
            self.port = int(udp.getsockname()[1])
            return udp, await asyncio.start_server(self._tcp_client, sock=tcp_sock)
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setblocking(False)
            try:
                udp.bind((self.host, self.port))
            except OSError:
                udp.close()
                raise
            port = int(udp.getsockname()[1])
            try:
                tcp = await asyncio.start_server(self._tcp_client, self.host, port)
            except OSError:
                udp.close()
                if self.port:
                    raise
                continue
            self.port = port
            return udp, tcp
        raise OSError(f"no port free for both UDP and TCP on {self.host}")

    def _drain(self, udp: socket.socket) -> None:
        """Answer the datagrams waiting on ``udp``: up to ``BATCH`` per wake-up of the loop
        (one wake-up per datagram costs more than the answer when the cache has it)."""
        for _ in range(BATCH):
            try:
                data, addr = udp.recvfrom(UDP_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("dns: recvfrom: %s", e)
                continue
            reply, request = self.answer_local(data, addr[0])
            if reply is not None:
                _send(udp, _fit_udp(reply), addr=addr)
            elif request is not None:
                self._spawn_forward(request, functools.partial(_send, udp, addr=addr))

    def answer_local(self, data: bytes, client_ip: str) -> tuple[bytes | None, DNSRecord | None]:
        """``(reply, None)`` when answered here (or unanswerable), ``(None, request)`` when the
        request must be forwarded."""
        ns = self.namespace_of(client_ip)
        key = (data[2:], ns)
        hit = self._cache.get(key)
        if hit is not None:
            return data[:2] + hit, None
        fast = self.index.fast(data, ns)
        if fast:
            if self._cache_limit:
                if len(self._cache) >= self._cache_limit:
                    self._cache.clear()
                self._cache[key] = fast[2:]
            return fast, None
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            if len(data) < 12:
                return None, None
            header = DNSHeader.parse(_Buffer(data[:12]))
            bad = DNSRecord(DNSHeader(id=header.id, qr=1, rcode=RCODE.FORMERR))
            return bytes(bad.pack()), None
        reply = self.index.answer(request, ns)
        if reply is not None:
            packed = bytes(reply.pack())
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            if self._cache_limit:
                self._cache[key] = packed[2:]
            return packed, None
        return None, request

    async def forward(self, request: DNSRecord) -> bytes:
        fail = request.reply()
        fail.header.rcode = RCODE.SERVFAIL
        if self.upstream is None:
            return bytes(fail.pack())
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Forward(got, request.header.id), remote_addr=self.upstream
        )
        try:
            transport.sendto(request.pack())
            return await within(self.forward_timeout, got)
        except (TimeoutError, OSError):
            return bytes(fail.pack())
        finally:
            transport.close()

    def _spawn_forward(self, request: DNSRecord, reply_to: Callable[[bytes], None]) -> None:
        async def go() -> None:
            reply_to(_fit_udp(await self.forward(request)))

        if self._tg is not None:
            self._tg.create_task(go())

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                reply, request = self.answer_local(data, client_ip)
                if request is not None:
                    reply = await self.forward(request)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _Buffer:
    """The minimal buffer dnslib's header parser reads from."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        out = struct.unpack(fmt, self.data[self.offset : self.offset + size])
        self.offset += size
        return out


def _fit_udp(reply: bytes) -> bytes:
    if len(reply) <= UDP_LIMIT:
        return reply
    r = DNSRecord.parse(reply)
    r.truncate()
    return bytes(r.pack())


def _named(s: Service) -> object:
    """What of a service its DNS names depend on (replica addresses only for stateful ones)."""
    eps = tuple((e.replica, e.ip) for e in s.endpoints) if s.spec.stateful else ()
    return (s.key, s.vip, s.spec.ports, s.spec.stateful, eps)


def _send(udp: socket.socket, reply: bytes, *, addr: tuple[str, int]) -> None:
    """A reply the socket cannot take now is dropped, as UDP may (the client asks again)."""
    with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
        udp.sendto(reply, addr)


class _Forward(asyncio.DatagramProtocol):
    def __init__(self, got: asyncio.Future[bytes], qid: int) -> None:
        self.got = got
        self.qid = qid

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self.qid and not self.got.done():
            self.got.set_result(data)


class Resolver(Protocol):
    """What a container sees: ask a name, get the reply."""

    async def query(self, name: str, qtype: str = "A") -> DNSRecord: ...


class FakeResolver:
    """Answers from an index in-process, as the responder would (forwarded names: SERVFAIL
    unless ``upstream`` maps them)."""

    def __init__(self, index: DnsIndex, namespace: str | None = None) -> None:
        self.index = index
        self.namespace = namespace
        self.upstream: dict[tuple[str, str], str] = {}

    async def query(self, name: str, qtype: str = "A") -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        r = self.index.answer(q, self.namespace)
        if r is not None:
            return r
        r = q.reply()
        ip = self.upstream.get((name.rstrip("."), qtype))
        if ip is None:
            r.header.rcode = RCODE.SERVFAIL
        else:
            r.add_answer(RR(name, QTYPE.A, rdata=A(ip), ttl=60))
        return r


class UdpResolver:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.addr = (host, port)
        self.timeout = timeout

    async def query(self, name: str, qtype: str = "A") -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Forward(got, q.header.id), remote_addr=self.addr
        )
        try:
            transport.sendto(q.pack())
            return DNSRecord.parse(await within(self.timeout, got))
        finally:
            transport.close()


class TcpResolver:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.addr = (host, port)
        self.timeout = timeout

    async def query(self, name: str, qtype: str = "A") -> DNSRecord:
        q = DNSRecord.question(name, qtype).pack()
        reader, writer = await within(self.timeout, asyncio.open_connection(*self.addr))
        try:
            writer.write(struct.pack("!H", len(q)) + q)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            return DNSRecord.parse(await reader.readexactly(size))
        finally:
            writer.close()
