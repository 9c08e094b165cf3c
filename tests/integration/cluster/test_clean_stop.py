"""A clean stop (an upgrade, ``systemctl restart``) is not a death: the agent says goodbye
and its node's replicas are kept for the hold it asks for; a killed agent says nothing."""

from __future__ import annotations

import asyncio

from .harness import wait_for

WEB = b"""
name: web
image: busybox:latest
command: [sleep, "3600"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 3
placement:
  spread: [zone]
"""


async def test_clean_stop_holds_the_node_and_its_replicas(cluster) -> None:  # type: ignore[no-untyped-def]
    _coord, client, agents, start_agent = cluster
    await start_agent(0, restart_hold_s=20.0)
    for i in (1, 2):
        await start_agent(i)
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"] * 3, what="3 ready")
    await asyncio.to_thread(client.apply, WEB)

    def running() -> list[dict]:  # type: ignore[type-arg]
        return [r for r in client.workload("web")["replicas"] if r["observed"] == "running"]

    await wait_for(lambda: len(running()) == 3, what="3 running")
    nodes = await asyncio.to_thread(client.nodes)  # (the coordinator runs on this loop)
    held = next(n["id"] for n in nodes if n["name"] == "node0")
    other = next(n["id"] for n in nodes if n["name"] == "node1")
    before = {r["id"] for r in await asyncio.to_thread(running)}

    agents[0].cancel()  # what SIGTERM does to `cloudless agent`
    await asyncio.gather(agents[0], return_exceptions=True)

    def said_goodbye() -> bool:
        lines = client.stream("/v1/events?tail=200")
        return any(b"agent stopping" in ln for ln in lines)

    await wait_for(said_goodbye, what="the goodbye recorded")
    await asyncio.sleep(3.0)  # six times the 0.5 s disconnect grace
    states = {n["id"]: n["state"] for n in await asyncio.to_thread(client.nodes)}
    assert states[held] == "ready"
    web = await asyncio.to_thread(client.workload, "web")
    assert {r["id"] for r in web["replicas"]} == before  # nothing placed

    # Without a hold the same stop is judged at once (test_local_cluster covers replacement).
    agents[1].cancel()
    await wait_for(
        lambda: {n["id"]: n["state"] for n in client.nodes()}[other] == "offline",
        timeout=5,
        what="node1 offline",
    )
