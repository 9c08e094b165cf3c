"""Endpoint convergence from the coordinator to every device, 200 services x 3 endpoints:
an endpoint set written to the store -> the publisher's round -> each device's message on the
wire (serialized and parsed) -> the device's nft table (real ``nft`` in a namespace per
device) and DNS index updated. Two pipelines side by side, alternating per round:

* ``whole`` (as before): every device gets its whole message again and replaces its whole
  table (the legacy rendering);
* ``delta`` (now): devices get the changed service alone (``push_services``), patch their
  table (``service_updates.apply_update``) and send nft only that change.

The NetworkController's step (replicas -> endpoint set, one 0.1 s coalescing round) and the
gRPC hop are not in it; the publisher's 50 ms coalescing round is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile
from bench.network.dns_load import services
from bench.network.nft_swap import _LegacyProgrammer
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import SystemClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.device import ServicesProgrammer
from cloudless.network.dns_server import DnsServer
from cloudless.network.nft import NftContext
from cloudless.network.nft_apply import NftApplier
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.service_updates import apply_update
from cloudless.network.services import Endpoint
from cloudless.network.state import assign_device, assign_service, set_endpoints
from cloudless.network.testing import Namespaces
from cloudless.network.wire import DeviceConfig
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore


@dataclass
class Device:
    """One agent's share: the message it holds, its programmer, and what it has applied."""

    node_id: str
    programmer: ServicesProgrammer | _LegacyProgrammer
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    desired: pb.NetworkConfig | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_in: int = 0

    async def run(self) -> None:
        while True:
            raw = await self.inbox.get()
            self.bytes_in += len(raw)
            msg = pb.CoordinatorMessage.FromString(raw)
            if msg.WhichOneof("kind") == "services_update":
                assert self.desired is not None
                self.desired = apply_update(self.desired, msg.services_update)
            else:
                self.desired = msg.assignments.network
            cfg = DeviceConfig.from_pb(self.desired)
            await self.programmer.apply(list(cfg.services))
            self.done.set()


class Hub:
    """The dispatcher's part: whole messages (``repush``) or the change alone."""

    def __init__(self, devices: dict[str, Device]) -> None:
        self.devices = devices
        self.publisher: NetworkPublisher | None = None
        self.pushed_at = 0.0  # when the publisher last handed messages over

    def repush(self, node_ids: Iterable[str]) -> None:
        assert self.publisher is not None
        self.pushed_at = time.perf_counter()
        for n in node_ids:
            msg = pb.CoordinatorMessage(
                assignments=pb.Assignments(network=self.publisher.config_for(n))
            )
            self.devices[n].inbox.put_nowait(msg.SerializeToString())

    def push_services(self, update: pb.NetworkServicesUpdate, node_ids: Iterable[str]) -> None:
        self.pushed_at = time.perf_counter()
        raw = pb.CoordinatorMessage(services_update=update).SerializeToString()
        for n in node_ids:
            self.devices[n].inbox.put_nowait(raw)


async def _pipeline(
    mode: str, nss: Namespaces, devices_n: int, rounds: int
) -> tuple[list[float], list[float], int]:
    plan_cfg = AddressPlanConfig()
    plan = plan_cfg.plan()
    store = MemoryStore(SystemClock())
    svcs = services(200, 3)
    devices: dict[str, Device] = {}
    for i in range(devices_n):
        ns = nss.create(f"{mode[0]}{i}")
        addrs = await assign_device(store, plan, f"n{i}")
        ctx = NftContext(addrs.container_subnet, plan.containers, plan.cluster_ranges())
        nft = NftApplier(host_argv=("nsenter", f"--net=/run/netns/{ns}"))
        prog: ServicesProgrammer | _LegacyProgrammer = (
            ServicesProgrammer(ctx, nft, DnsServer())
            if mode == "delta"
            else _LegacyProgrammer(ctx, nft, DnsServer())
        )
        devices[f"n{i}"] = Device(f"n{i}", prog)
    for s in svcs:
        await assign_service(store, plan, s.spec)
        await set_endpoints(store, s.key, s.endpoints, 3)
    hub = Hub(devices)
    pub = NetworkPublisher(
        store,
        plan_cfg,
        SystemClock(),
        hub.repush,
        push_services=hub.push_services if mode == "delta" else None,
    )
    hub.publisher = pub
    times: list[float] = []
    publisher_ms: list[float] = []
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.run()) for d in devices.values()]
        lead = tg.create_task(pub.lead(NO_FENCE))
        for d in devices.values():  # the first whole messages
            await d.done.wait()
        bytes_before = sum(d.bytes_in for d in devices.values())
        for r in range(rounds):
            s = svcs[(r * 7) % len(svcs)]
            ep = Endpoint(ipaddress.IPv4Address(f"10.42.9.{r % 250 + 2}"), f"m{r}", "n9")
            for d in devices.values():
                d.done.clear()
            t0 = time.perf_counter()
            await set_endpoints(store, s.key, (*s.endpoints[1:], ep), 3)
            for d in devices.values():
                await d.done.wait()
            times.append((time.perf_counter() - t0) * 1000)
            publisher_ms.append((hub.pushed_at - t0) * 1000)
            await asyncio.sleep(0.2)  # let the publisher settle before the next change
        per_change = (sum(d.bytes_in for d in devices.values()) - bytes_before) / rounds
        lead.cancel()
        for t in tasks:
            t.cancel()
    return times, publisher_ms, round(per_change)


def measure(devices: int = 6, rounds: int = 15, repeats: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": devices, "services": 200, "endpoints_per_service": 3}
    runs: dict[str, list[float]] = {"whole": [], "delta": []}
    pub_ms: dict[str, list[float]] = {"whole": [], "delta": []}
    wire: dict[str, int] = {}
    nss = Namespaces("c", base="cl14-")
    try:
        for rep in range(repeats):
            for mode in ("whole", "delta") if rep % 2 == 0 else ("delta", "whole"):
                times, publisher, per_change = asyncio.run(_pipeline(mode, nss, devices, rounds))
                runs[mode] += times
                pub_ms[mode] += publisher
                wire[mode] = per_change
                nss.close()
                nss.created.clear()
    finally:
        nss.close()
    for mode, xs in runs.items():
        out[mode] = {
            "p50_ms": round(percentile(xs, 50), 1),
            "p95_ms": round(percentile(xs, 95), 1),
            "max_ms": round(max(xs), 1),
            "n": len(xs),
            "store_write_to_publisher_push_p50_ms": round(percentile(pub_ms[mode], 50), 1),
            "bytes_to_all_devices_per_change": wire[mode],
        }
    out["whole_over_delta_p95"] = round(out["whole"]["p95_ms"] / out["delta"]["p95_ms"], 2)
    out["goal"] = "endpoint change -> every device updated, P95 <= 1 s (200 x 3)"
    return out
