"""The nft side of the service table, 200 services x 3 endpoints, side by side in one run:
the per-VIP table (``nft.render`` / ``nft.render_delta``) against the table as it was rendered
before (``nft_legacy``: a chain per VIP port and per endpoint).

Each round, interleaved, in namespaces of their own:

* render time in Python, legacy vs now;
* a full swap (``nft -f`` of the whole table over the previous one), legacy vs now, entered
  with ``nsenter --net`` (cheap) and, for the figure committed before, ``ip netns exec``;
* where a swap's time goes, for the current table: starting ``nft`` on an empty document (the
  process and the namespace entry), loading the table into an empty namespace (no old table
  to read back), and the swap over the old table;
* the device update after one endpoint moves (``ServicesProgrammer``: delta + conntrack + DNS)
  against the legacy update (whole table, one ``conntrack -D`` per VIP port and endpoint, DNS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from bench.network.nft_legacy import render_legacy, stale_conntrack_legacy
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.device import ServicesProgrammer
from cloudless.network.dns import DnsIndex
from cloudless.network.dns_server import DnsServer
from cloudless.network.nft import NftContext, render, render_delta
from cloudless.network.nft_apply import NftApplier, _run
from cloudless.network.services import Endpoint, Service
from cloudless.network.testing import Namespaces


def _ms(xs: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(xs, 50), 2), "p95": round(percentile(xs, 95), 2)}


@dataclass
class _LegacyProgrammer:
    """The device update as it was: whole table, per-port conntrack deletions, DNS index."""

    ctx: NftContext
    rules: NftApplier
    dns: DnsServer
    applied: tuple[Service, ...] = ()

    async def apply(self, svcs: list[Service]) -> None:
        await self.rules.apply(render_legacy(self.ctx, svcs))
        gone = stale_conntrack_legacy(self.applied, svcs)
        self.applied = tuple(svcs)
        self.dns.set_services(svcs)
        for argv in gone:
            await _run([*self.rules.host_argv, *argv])


async def _timed(work: Awaitable[object]) -> float:
    t0 = time.perf_counter()
    await work
    return (time.perf_counter() - t0) * 1000


def _moved(svcs: list[Service], r: int) -> list[Service]:
    i = (r * 7) % len(svcs)
    ep = Endpoint(ipaddress.IPv4Address(f"10.42.9.{r % 250 + 2}"), f"moved-{r}", "d9")
    out = list(svcs)
    out[i] = replace(out[i], endpoints=(*out[i].endpoints[1:], ep))
    return out


def measure(rounds: int = 20) -> dict[str, Any]:
    plan = AddressPlanConfig().plan()
    ctx = NftContext(plan.addresses(1).container_subnet, plan.containers, plan.cluster_ranges())
    svcs = services(200, 3)
    nss = Namespaces("b", base="cl14-")
    t: dict[str, list[float]] = {}

    def add(name: str, ms: float) -> None:
        t.setdefault(name, []).append(ms)

    try:
        ns = {k: nss.create(k) for k in ("old", "new", "fresh", "ipx", "pold", "pnew")}

        def enter(k: str) -> NftApplier:
            return NftApplier(host_argv=("nsenter", f"--net=/run/netns/{ns[k]}"))

        old, new, fresh, pold, pnew = (enter(k) for k in ("old", "new", "fresh", "pold", "pnew"))
        ipx = NftApplier(host_argv=("ip", "netns", "exec", ns["ipx"]))

        async def go() -> dict[str, Any]:
            docs_new = [render(ctx, svcs[r:] + svcs[:r]) for r in (0, 1)]
            docs_old = [render_legacy(ctx, svcs[r:] + svcs[:r]) for r in (0, 1)]
            for d in (old, new, ipx):
                await d.apply((docs_old if d is old else docs_new)[0])
            for r in range(rounds):
                rot = svcs[r % 200 :] + svcs[: r % 200]
                t0 = time.perf_counter()
                render_legacy(ctx, rot)
                add("render_legacy", (time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                render(ctx, rot)
                add("render", (time.perf_counter() - t0) * 1000)
                k = (r + 1) % 2
                add("swap_legacy", await _timed(old.apply(docs_old[k])))
                add("swap", await _timed(new.apply(docs_new[k])))
                add("swap_ip_netns_exec", await _timed(ipx.apply(docs_new[k])))
                add("nft_empty_document", await _timed(fresh.apply("")))
                add("load_into_empty_namespace", await _timed(fresh.apply(docs_new[k])))
                await fresh.remove()
            # one endpoint moves per round: the device update, legacy vs now
            dns_old, dns_new = DnsServer(), DnsServer()
            legacy = _LegacyProgrammer(ctx, pold, dns_old)
            prog = ServicesProgrammer(ctx, pnew, dns_new)
            current = list(svcs)
            await legacy.apply(current)
            await prog.apply(current)
            kinds = set()
            for r in range(rounds):
                nxt = _moved(current, r)
                t0 = time.perf_counter()
                delta = render_delta(ctx, current, nxt)
                add("render_delta", (time.perf_counter() - t0) * 1000)
                add("update_legacy", await _timed(legacy.apply(nxt)))
                add("update", await _timed(prog.apply(nxt)))
                kinds.add(prog.last_kind)
                t0 = time.perf_counter()
                DnsIndex(nxt)  # what the update rebuilds when a name's answer changed
                add("dns_index_build", (time.perf_counter() - t0) * 1000)
                current = nxt
            assert kinds == {"delta"}, kinds
            want = {
                f"{s.vip} {p.protocol} {p.port}": sorted(f"{e.ip}:{p.port}" for e in s.endpoints)
                for s in current
                for p in s.spec.ports
            }
            same = await pnew.programmed() == want
            return {
                "vip_ports_programmed": len(await pnew.programmed()),
                "after_deltas_programmed_is_the_service_table": same,
                "delta_bytes_one_endpoint_moved": len(delta),
                "document_bytes": len(docs_new[0]),
                "document_bytes_legacy": len(docs_old[0]),
            }

        info = asyncio.run(go())

        async def spawn(argv: tuple[str, ...]) -> float:
            return await _timed(_run(argv))

        async def entries() -> None:
            for _ in range(10):
                add("spawn_true", await spawn(("true",)))
                add(
                    "spawn_nsenter",
                    await spawn(("nsenter", f"--net=/run/netns/{ns['new']}", "true")),
                )
                add("spawn_ip_netns_exec", await spawn(("ip", "netns", "exec", ns["new"], "true")))

        asyncio.run(entries())
    finally:
        nss.close()
    p50 = {k: percentile(v, 50) for k, v in t.items()}
    return {
        "services": 200,
        "endpoints_per_service": 3,
        **info,
        "rounds": rounds,
        "ms": {k: _ms(v) for k, v in t.items()},
        "ratios_p50": {
            "swap_legacy_over_now": round(p50["swap_legacy"] / p50["swap"], 2),
            "render_legacy_over_now": round(p50["render_legacy"] / p50["render"], 2),
            "update_legacy_over_now": round(p50["update_legacy"] / p50["update"], 2),
        },
        "goal": "a full rule swap of 200 x 3 in < 100 ms; convergence P95 <= 1 s",
    }
