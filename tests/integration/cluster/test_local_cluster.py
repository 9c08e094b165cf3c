"""End to end in one process: a coordinator (in-memory store) with real mTLS gRPC and HTTPS on
loopback, three agents on the fake runtime. Enroll, apply, run, lose a node, replace."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloudless.agent.agent import Agent, AgentConfig
from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.coordinator.config import CoordinatorConfig
from cloudless.coordinator.server import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.lib.net import free_port
from cloudless.model.resources import Resources
from cloudless.runtime.fake import FakeRuntime

HELLO = b"""
name: hello
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 3
placement:
  spread: [zone]
"""


async def wait_for(pred, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        v = await asyncio.to_thread(pred)
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def coordinator_config(tmp: Path) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=tmp / "coord",
        store="memory",
        bootstrap=True,
        api_port=free_port(),
        agent_port=free_port(),
        enroll_port=free_port(),
        root_key_size=2048,
        bcrypt_cost=4,
    )


def agent_config(tmp: Path, api: str, token: str, i: int) -> AgentConfig:
    return AgentConfig(
        data_dir=tmp / f"agent{i}",
        join=api,
        token=token,
        name=f"node{i}",
        zone=f"zone-{'abc'[i % 3]}",
        region="local",
        capacity_override=Resources(2000, 2 << 30, 10 << 30, 10**9),
        monitor_interval_s=0.5,
    )


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    coord = Coordinator(coordinator_config(tmp_path))
    task = asyncio.create_task(coord.run())
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp_path / "coord" / "admin" / "config.json"))
    agents: dict[int, asyncio.Task[None]] = {}

    async def start_agent(i: int) -> None:
        token = await asyncio.to_thread(client.create_token)
        cfg = agent_config(tmp_path, coord.config.api_url, token, i)
        agents[i] = asyncio.create_task(Agent(cfg, FakeRuntime(SystemClock())).run())

    try:
        yield coord, client, agents, start_agent
    finally:
        for t in [*agents.values(), task]:
            t.cancel()
        await asyncio.gather(*agents.values(), task, return_exceptions=True)


async def test_enroll_apply_run_and_replace_lost_node(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, client, agents, start_agent = cluster
    for i in range(3):
        await start_agent(i)
    await wait_for(
        lambda: [n["state"] for n in client.nodes()] == ["ready"] * 3, what="3 ready nodes"
    )
    nodes = {n["id"]: n for n in await asyncio.to_thread(client.nodes)}
    assert sorted(n["zone"] for n in nodes.values()) == ["zone-a", "zone-b", "zone-c"]

    res = await asyncio.to_thread(client.apply, HELLO)
    assert res["result"] == "created"

    def running() -> list[dict]:  # type: ignore[type-arg]
        w = client.workload("hello")
        return [r for r in w["replicas"] if r["observed"] == "running"]

    reps = await wait_for(lambda: len(running()) == 3 and running(), what="3 running replicas")
    zones = sorted(nodes[r["node_id"]]["zone"] for r in reps)
    assert zones == ["zone-a", "zone-b", "zone-c"]  # spread over three zones

    # Lose the node of one replica: it goes offline and the replica is replaced elsewhere.
    victim = reps[0]["node_id"]
    idx = next(i for i in range(3) if nodes[victim]["name"] == f"node{i}")
    t0 = time.monotonic()
    agents[idx].cancel()
    await wait_for(
        lambda: any(n["id"] == victim and n["state"] == "offline" for n in client.nodes()),
        what="victim offline",
    )
    await wait_for(
        lambda: len([r for r in running() if r["node_id"] != victim]) == 3,
        what="replacement running",
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 10, elapsed

    # Bad input is refused with the field path, and changes nothing.
    with pytest.raises(ApiError) as ei:
        await asyncio.to_thread(client.apply, b"name: bad\nimage: x\nresources: {memory: 12XB}\n")
    assert ei.value.status == 400
    assert 'spec.resources.memory: "12XB" is not a size' in ei.value.message
    with pytest.raises(ApiError) as ei:
        await asyncio.to_thread(client.workload, "nope")
    assert ei.value.status == 404
