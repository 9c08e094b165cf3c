"""Whole-table swap time: 200 services x 3 endpoints rendered and loaded with ``nft -f``; and
the device-local part of endpoint convergence: one endpoint moves, ``ServicesProgrammer``
re-renders, swaps the table, flushes the gone endpoint's conntrack entries and swaps the DNS
index."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import replace
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.device import ServicesProgrammer
from cloudless.network.dns_server import DnsServer
from cloudless.network.nft import NftContext, render
from cloudless.network.nft_apply import NftApplier
from cloudless.network.services import Endpoint
from cloudless.network.testing import Namespaces


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(xs, 50), 2), "p95": round(percentile(xs, 95), 2)}


def measure(rounds: int = 20) -> dict[str, Any]:
    plan = AddressPlanConfig().plan()
    ctx = NftContext(plan.addresses(1).container_subnet, plan.containers, plan.cluster_ranges())
    svcs = services(200, 3)
    ns = Namespaces("b")
    render_ms: list[float] = []
    apply_ms: list[float] = []
    converge_ms: list[float] = []
    doc = ""
    try:
        dev = ns.create("nft")
        nft = NftApplier(host_argv=("ip", "netns", "exec", dev))

        async def go() -> int:
            nonlocal doc
            for r in range(rounds):
                t0 = time.perf_counter()
                doc = render(ctx, svcs[r % 200 :] + svcs[: r % 200])
                t1 = time.perf_counter()
                await nft.apply(doc)
                t2 = time.perf_counter()
                render_ms.append((t1 - t0) * 1000)
                apply_ms.append((t2 - t1) * 1000)
            prog = ServicesProgrammer(ctx, nft, DnsServer())
            current = list(svcs)
            await prog.apply(current)
            for r in range(rounds):
                i = (r * 7) % 200
                moved = Endpoint(ipaddress.IPv4Address(f"10.42.9.{r + 2}"), f"moved-{r}", "d9")
                current[i] = replace(current[i], endpoints=(*current[i].endpoints[1:], moved))
                t0 = time.perf_counter()
                await prog.apply(current)
                converge_ms.append((time.perf_counter() - t0) * 1000)
            return len(await nft.programmed())

        programmed = asyncio.run(go())
        t0 = time.perf_counter()
        for _ in range(5):
            ns.sh(dev, "true")
        exec_ms = (time.perf_counter() - t0) * 1000 / 5
    finally:
        ns.close()
    return {
        "services": 200,
        "endpoints_per_service": 3,
        "vip_ports_programmed": programmed,
        "document_bytes": len(doc),
        "render_ms": _ms(render_ms),
        "apply_ms": _ms(apply_ms),
        "one_endpoint_moved_device_update_ms": _ms(converge_ms),
        "netns_exec_overhead_ms": round(exec_ms, 2),
        "rounds": rounds,
        "goal": "a full rule swap of 200 x 3 in < 100 ms; convergence P95 <= 1 s",
    }
