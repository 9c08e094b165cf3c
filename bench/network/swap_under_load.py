"""Whole-table swaps while a client keeps connecting to a VIP: does any connection miss?

One namespace: three HTTP backends (busybox httpd on 10.42.1.2-4, on a veth inside it), the
device's table with 200 services x 3 endpoints (the VIP 10.43.0.1:80 among them, DNAT in the
output hook as for device-local clients), and a client thread inside the namespace opening
one connection after another to the VIP. Meanwhile the table is swapped ``swaps`` times,
alternating two documents that differ in every service's endpoint order and in the other
services' endpoints (every swap replaces the whole table; every endpoint of the VIP stays
alive). A miss is a connection that fails or gets no answer. Swap time is measured idle and
under this load, side by side.
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.lab import CLONE_NEWNET
from cloudless.network.nft import NftContext, render
from cloudless.network.nft_apply import NftApplier
from cloudless.network.services import Endpoint, Service
from cloudless.network.testing import Namespaces

BACKENDS = ("10.42.1.2", "10.42.1.3", "10.42.1.4")
VIP = "10.43.0.1"


def _docs(ctx: NftContext) -> tuple[str, str]:
    base = services(200, 3)
    eps = tuple(
        Endpoint(ipaddress.IPv4Address(ip), f"web-{i}", "d1") for i, ip in enumerate(BACKENDS)
    )
    web = replace(base[0], vip=ipaddress.IPv4Address(VIP), endpoints=eps)
    a: list[Service] = [web, *base[1:]]
    b: list[Service] = [replace(s, endpoints=tuple(reversed(s.endpoints))) for s in a]
    return render(ctx, a), render(ctx, b)


class Client:
    """Connects to VIP:80 in a loop from inside ``ns``; counts answers and misses."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.ok = 0
        self.misses: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread only, for its whole life
                raise OSError(ctypes.get_errno(), f"setns into {self.ns}")
        finally:
            os.close(fd)
        while not self.stop.is_set():
            try:
                with socket.create_connection((VIP, 80), timeout=2) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1"):
                        self.ok += 1
                    else:
                        self.misses.append("no answer")
            except OSError as e:
                self.misses.append(str(e))


def measure(swaps: int = 20) -> dict[str, Any]:
    plan = AddressPlanConfig().plan()
    ctx = NftContext(plan.addresses(1).container_subnet, plan.containers, plan.cluster_ranges())
    doc_a, doc_b = _docs(ctx)
    nss = Namespaces("w", base="cl14-")
    try:
        ns = nss.create("swap")
        nss.sh(
            ns, "ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up"
        )
        for ip in BACKENDS:
            nss.sh(ns, f"ip addr add {ip}/32 dev d0")
        nss.sh(ns, "ip route add 10.43.0.0/16 dev d0")
        www = Path(f"/tmp/{nss.prefix}-www")
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text("ok\n")
        for ip in BACKENDS:
            nss.popen(ns, ["busybox", "httpd", "-f", "-p", f"{ip}:80", "-h", str(www)])
        nft = NftApplier(host_argv=("ip", "netns", "exec", ns))

        async def swap_times(n: int) -> list[float]:
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                await nft.apply(doc_b if i % 2 else doc_a)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        asyncio.run(swap_times(2))
        time.sleep(0.5)
        idle = asyncio.run(swap_times(swaps))
        client = Client(ns)
        client.thread.start()
        time.sleep(1.0)
        before = client.ok
        loaded = asyncio.run(swap_times(swaps))
        time.sleep(0.5)
        during = client.ok - before
        client.stop.set()
        client.thread.join(5)
        return {
            "services": 200,
            "endpoints_per_service": 3,
            "swaps": swaps,
            "connections_answered": client.ok,
            "connections_during_swaps": during,
            "misses": len(client.misses),
            "miss_examples": sorted(set(client.misses))[:3],
            "swap_ms_idle": {"p50": round(percentile(idle, 50), 1)},
            "swap_ms_under_load": {"p50": round(percentile(loaded, 50), 1)},
            "swap_under_load_vs_idle": round(percentile(loaded, 50) / percentile(idle, 50), 2),
            "goal": "no connection to a VIP misses while its table is swapped",
        }
    finally:
        nss.close()
