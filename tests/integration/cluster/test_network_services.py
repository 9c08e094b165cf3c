"""The network controller wired into a coordinator (in-memory store, real APIs, fake-runtime
agents): enrolled nodes get address slots, a workload with ports becomes a service with a VIP
(``GET /v1/services``, ``cloudless get services``), and deleting it frees the VIP."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloudless.agent.agent import Agent
from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.state import SERVICE_HEADERS, device_slots, service_row
from cloudless.runtime.fake import FakeRuntime

from .harness import agent_config, coordinator_config, wait_for

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 2
ports: [8080]
"""


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = replace(coordinator_config(tmp_path), network=AddressPlanConfig())
    coord = Coordinator(cfg)
    task = asyncio.create_task(coord.run())
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp_path / "coord" / "admin" / "config.json"))
    agents: list[asyncio.Task[Any]] = []
    try:
        for i in range(2):
            token = await asyncio.to_thread(client.create_token)
            a = agent_config(tmp_path, cfg.api_url, token, i)
            agents.append(asyncio.create_task(Agent(a, FakeRuntime(SystemClock())).run()))
        yield coord, client
    finally:
        for t in [*agents, task]:
            t.cancel()
        await asyncio.gather(*agents, task, return_exceptions=True)


async def test_slots_services_and_vips(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client = cluster
    await wait_for(lambda: len(client.nodes()) == 2, what="2 nodes")

    async def slots() -> dict[str, int]:
        return await device_slots(coord.state.store)

    for _ in range(100):
        if len(await slots()) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted((await slots()).values()) == [0, 1]  # one slot per enrolled node

    await asyncio.to_thread(client.apply, WEB)

    def services() -> list[dict[str, Any]]:
        return list(client.call("GET", "/v1/services")["services"])

    [svc] = await wait_for(lambda: services(), what="the web service")
    assert (svc["name"], svc["dns"], svc["vip"], svc["ports"]) == (
        "web",
        "web.default.cloudless",
        "10.43.0.1",
        ["8080/tcp"],
    )
    # replicas run in the device's namespace (no CNI yet): their addresses are not container
    # addresses, so none is an endpoint; the total counts them
    await wait_for(lambda: services()[0]["total"] == 2, what="2 replicas counted")
    [now] = await asyncio.to_thread(services)  # (the coordinator runs on this loop)
    assert now["ready"] == 0
    assert service_row(now)[2:] == ["10.43.0.1", "8080/tcp", "0/2"]
    assert len(SERVICE_HEADERS) == len(service_row(svc))

    await asyncio.to_thread(client.call, "DELETE", "/v1/workloads/web")
    await wait_for(lambda: services() == [], what="service gone with its workload")
