"""DNS responder load: the server in its own process, a raw-socket client in this one."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import socket
import time
from typing import Any, cast

from dnslib import DNSRecord

from bench.common import percentile
from cloudless.network.dns import DnsIndex
from cloudless.network.dns_server import DnsServer
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec


def services(n: int = 200, eps: int = 3) -> list[Service]:
    import ipaddress

    out = []
    for i in range(n):
        spec = ServiceSpec(ServiceKey("default", f"svc{i}"), (ServicePort(80),), stateful=True)
        endpoints = tuple(
            Endpoint(ipaddress.IPv4Address(f"10.42.{k}.{i % 250 + 2}"), f"svc{i}-{k}", f"d{k}")
            for k in range(eps)
        )
        out.append(
            Service(spec, ipaddress.IPv4Address(f"10.43.{i // 250}.{i % 250 + 1}"), endpoints)
        )
    return out


class _Udp(asyncio.DatagramProtocol):
    """The responder's UDP side as it was: an asyncio datagram protocol, one datagram per
    wake-up of the loop (kept here only to measure side by side)."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        reply, _ = self.server.answer_local(data, addr[0])
        if reply is not None:
            self.transport.sendto(reply, addr)


class LegacyDnsServer(DnsServer):
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        self.port = int(transport.get_extra_info("sockname")[1])
        self.ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            transport.close()


def _serve(port_q: Any, stop: Any, cache: bool, legacy: bool) -> None:
    async def main() -> None:
        cls = LegacyDnsServer if legacy else DnsServer
        server = cls(index=DnsIndex(services()), cache=cache)
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(server.run())
            await server.ready.wait()
            port_q.put(server.port)
            await asyncio.to_thread(stop.wait)
            t.cancel()

    asyncio.run(main())


def _queries(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        q = DNSRecord.question(f"svc{i % 200}.default.cloudless", "A")
        q.header.id = i % 65536
        out.append(bytes(q.pack()))
    return out


def measure(seconds: float = 3.0, window: int = 32, repeats: int = 2) -> dict[str, Any]:
    """Cached replies (the steady state: the same names asked again) and uncached (every
    reply built from the index), each in a fresh server process; the responder now (UDP
    datagrams drained in batches per wake-up) and as it was (``LegacyDnsServer``), alternating,
    ``repeats`` times."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(repeats):
        order = [False, True] if rep % 2 == 0 else [True, False]
        for legacy in order:
            for cache in (True, False):
                name = ("legacy_" if legacy else "") + ("cached" if cache else "uncached")
                runs.setdefault(name, []).append(_measure(seconds, window, cache, legacy))
    pairs = zip(runs["cached"], runs["legacy_cached"], strict=True)
    return {
        **{k: {"runs": v, "qps": [m["throughput_qps"] for m in v]} for k, v in runs.items()},
        "now_over_legacy_qps_cached_per_repeat": [
            round(a["throughput_qps"] / b["throughput_qps"], 2) for a, b in pairs
        ],
        "services": 200,
        "names_in_index": len(DnsIndex(services())),
        "cpus": os.cpu_count(),
        "goal": ">= 10,000 qps per device, P99 <= 2 ms on loopback",
    }


def _measure(seconds: float, window: int, cache: bool, legacy: bool) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    port_q = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=_serve, args=(port_q, stop, cache, legacy), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=20)
        addr = ("127.0.0.1", port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            qs = _queries(4096)
            s.sendto(qs[1], addr)
            check = DNSRecord.parse(s.recv(512))
            if [str(rr.rdata) for rr in check.rr] != ["10.43.0.2"]:
                raise RuntimeError(f"responder answered svc1 wrongly: {check}")
            # latency: one query in flight at a time
            lat = []
            for i in range(2000):
                t0 = time.perf_counter()
                s.sendto(qs[i % len(qs)], addr)
                s.recv(512)
                lat.append((time.perf_counter() - t0) * 1000)
            # throughput: keep `window` queries in flight
            sent = got = lost = 0
            t_end = time.perf_counter() + seconds
            t0 = time.perf_counter()
            s.settimeout(0.5)
            for _ in range(window):
                s.sendto(qs[sent % len(qs)], addr)
                sent += 1
            while time.perf_counter() < t_end:
                try:
                    s.recv(512)
                    got += 1
                except TimeoutError:
                    lost += 1
                    s.sendto(qs[sent % len(qs)], addr)
                    sent += 1
                    continue
                s.sendto(qs[sent % len(qs)], addr)
                sent += 1
            elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return {
        "latency_ms_one_in_flight": {
            "p50": round(percentile(lat, 50), 3),
            "p99": round(percentile(lat, 99), 3),
            "n": len(lat),
        },
        "throughput_qps": round(got / elapsed),
        "window": window,
        "lost": lost,
    }
