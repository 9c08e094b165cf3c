"""Whole-table swap time: 200 services x 3 endpoints rendered and loaded with ``nft -f``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.nft import NftContext, render
from cloudless.network.nft_apply import NftApplier
from cloudless.network.testing import Namespaces


def measure(rounds: int = 20) -> dict[str, Any]:
    plan = AddressPlanConfig().plan()
    ctx = NftContext(plan.addresses(1).container_subnet, plan.containers, plan.cluster_ranges())
    svcs = services(200, 3)
    ns = Namespaces("b")
    try:
        dev = ns.create("nft")
        nft = NftApplier(host_argv=("ip", "netns", "exec", dev))
        render_ms: list[float] = []
        apply_ms: list[float] = []

        doc = ""

        async def go() -> int:
            nonlocal doc
            for r in range(rounds):
                # move one endpoint each round so every swap changes the table
                moved = list(svcs)
                t0 = time.perf_counter()
                doc = render(ctx, moved[r % 200 :] + moved[: r % 200])
                t1 = time.perf_counter()
                await nft.apply(doc)
                t2 = time.perf_counter()
                render_ms.append((t1 - t0) * 1000)
                apply_ms.append((t2 - t1) * 1000)
            programmed = len(await nft.programmed())
            return programmed

        programmed = asyncio.run(go())
        # `ip netns exec` itself costs a few ms; measure it to report nft's own share
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
        "render_ms": {
            "p50": round(percentile(render_ms, 50), 2),
            "p95": round(percentile(render_ms, 95), 2),
        },
        "apply_ms": {
            "p50": round(percentile(apply_ms, 50), 2),
            "p95": round(percentile(apply_ms, 95), 2),
        },
        "netns_exec_overhead_ms": round(exec_ms, 2),
        "rounds": rounds,
        "goal": "a full rule swap of 200 x 3 in < 100 ms",
    }
