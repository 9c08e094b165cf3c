"""End to end in one process: a coordinator (in-memory store) with real mTLS gRPC and HTTPS on
loopback, three agents on the fake runtime. Enroll, apply, run, lose a node, replace."""

from __future__ import annotations

import asyncio
import time

import pytest

from cloudless.cli.client import ApiError

from .harness import wait_for

HELLO = b"""
name: hello
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 3
placement:
  spread: [zone]
"""


async def test_enroll_apply_run_and_replace_lost_node(cluster) -> None:  # type: ignore[no-untyped-def]
    _coord, client, agents, start_agent = cluster
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
