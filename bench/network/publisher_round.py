"""One publisher round with 200 services x 3 endpoints and 6 devices, after one endpoint set
changed: now (records decoded only when their ``mod_revision`` moved, a dataclass's type
hints resolved once) against every record decoded with its hints resolved again (what each
round did before), alternating in one run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from cloudless.lib.clock import SystemClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device, assign_service, set_endpoints
from cloudless.store import codec
from cloudless.store.memory import MemoryStore


async def _measure(rounds: int) -> dict[str, list[float]]:
    cfg = AddressPlanConfig()
    plan = cfg.plan()
    store = MemoryStore(SystemClock())
    for i in range(6):
        await assign_device(store, plan, f"n{i}")
    svcs = services(200, 3)
    for s in svcs:
        await assign_service(store, plan, s.spec)
        await set_endpoints(store, s.key, s.endpoints, 3)
    pub = NetworkPublisher(
        store, cfg, SystemClock(), lambda ns: None, push_services=lambda u, ns: None
    )
    await pub.refresh()
    out: dict[str, list[float]] = {"now": [], "every_record_decoded": []}
    for r in range(rounds):
        for mode in ("now", "every_record_decoded") if r % 2 else ("every_record_decoded", "now"):
            s = svcs[(r * 2 + (mode == "now")) % len(svcs)]
            await set_endpoints(store, s.key, s.endpoints[r % 3 :] + s.endpoints[: r % 3], 3)
            if mode != "now":
                pub._decoded.clear()
            t0 = time.perf_counter()
            if mode == "now":
                await pub.refresh()
            else:
                real = codec._type_hints
                codec._type_hints = codec._type_hints.__wrapped__  # type: ignore[assignment]
                try:
                    await pub.refresh()
                finally:
                    codec._type_hints = real
            out[mode].append((time.perf_counter() - t0) * 1000)
    return out


def measure(rounds: int = 20) -> dict[str, Any]:
    got = asyncio.run(_measure(rounds))
    p50 = {k: percentile(v, 50) for k, v in got.items()}
    return {
        "services": 200,
        "devices": 6,
        **{
            k: {"p50_ms": round(p50[k], 2), "p95_ms": round(percentile(v, 95), 2)}
            for k, v in got.items()
        },
        "every_record_decoded_over_now_p50": round(p50["every_record_decoded"] / p50["now"], 1),
    }
