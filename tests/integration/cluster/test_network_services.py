"""The network controller wired into a coordinator (in-memory store, real APIs, fake-runtime
agents): enrolled nodes get address slots, a workload with ports becomes a service with a VIP
(``GET /v1/services``, ``cloudless get services``), and deleting it frees the VIP."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudless.agent.agent import Agent
from cloudless.agent.network import AgentNetwork
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.cli.client import Client, ClientConfig
from cloudless.cli.main import app
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
            # containers stay on the device's network: a root test run must not build a
            # bridge, nft table and DNS responder on the host (test_agent_containers does that
            # in namespaces)
            a = replace(agent_config(tmp_path, cfg.api_url, token, i), container_network=False)
            agents.append(asyncio.create_task(Agent(a, FakeRuntime(SystemClock())).run()))
        yield coord, client
    finally:
        for t in [*agents, task]:
            t.cancel()
        await asyncio.gather(*agents, task, return_exceptions=True)


async def test_slots_services_and_vips(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
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

    # describe service: names, SRV, and why no replica is an endpoint
    d = await asyncio.to_thread(client.call, "GET", "/v1/services/web")
    assert d["names"][0] == "web.default.cloudless"
    assert d["srv"] == ["_8080._tcp.web.default.cloudless"]
    assert d["not_ready"].startswith("2 of 2 replicas are not endpoints")
    for path, words in (
        ("/v1/services/nope", "service 'nope' not found"),
        ("/v1/services/Web_1", "path.name: 'Web_1' is not a DNS label"),
        ("/v1/services/web?namespace=a.b", "query.namespace"),
    ):
        with pytest.raises(Exception) as e:
            await asyncio.to_thread(client.call, "GET", path)
        assert words in str(e.value)

    # net status: the plan and both nodes' slots
    net = await asyncio.to_thread(client.call, "GET", "/v1/network")
    assert net["enabled"] and net["slots"] == {"used": 2, "total": 256}
    assert [n["subnet"] for n in net["nodes"]] == ["10.42.0.0/24", "10.42.1.0/24"]
    assert net["lighthouse"] is None  # no lighthouse=IP:PORT given
    # what the agents report with their heartbeats (they run --no-container-network here)
    await wait_for(
        lambda: (
            [n["agent"] for n in client.call("GET", "/v1/network")["nodes"]]
            == ["off: disabled"] * 2
        ),
        what="the agents' network state",
    )

    # the leader's overlay observer has classified both nodes: no overlay report and no
    # lighthouse here, so nothing is known (and nothing is taken for unreachable)
    await wait_for(
        lambda: all(
            n["nat_reason"] == "no lighthouse or peer has a direct tunnel to it yet"
            and n["reachable"] is None
            and n["reach_reason"] == "its agent has not reported its overlay"
            for n in client.call("GET", "/v1/network")["nodes"]
        ),
        what="the overlay observer's records",
    )
    first = (await asyncio.to_thread(client.nodes))[0]  # (the coordinator runs on this loop)
    node_name = first["name"]
    detail = await asyncio.to_thread(client.call, "GET", f"/v1/nodes/{first['id']}")
    assert detail["overlay"]["nat"] == "unknown" and detail["overlay"]["overlay_ip"]

    # the same through the CLI, as a user types it
    config = str(tmp_path / "coord" / "admin" / "config.json")
    for args, expected in (
        (["describe", "service", "web"], ["10.43.0.1", "web.default.cloudless", "0 ready / 2"]),
        (
            ["net", "status"],
            ["2 used of 256", "10.42.1.0/24", "Lighthouse", "off: disabled", "NAT", "unknown"],
        ),
        (["describe", "node", node_name], ["Overlay IP", "100.64.0.", "NAT", "Reachable"]),
    ):
        r = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--config", config])
        assert r.exit_code == 0, r.output
        for w in expected:
            assert w in r.output, r.output

    await asyncio.to_thread(client.call, "DELETE", "/v1/workloads/web")
    await wait_for(lambda: services() == [], what="service gone with its workload")


POLICY = b"""
kind: NetworkPolicy
name: db-from-web
namespace: db
selector: {app: db}
ingress:
  - from: [{namespace: web, selector: {tier: front}}]
    ports: [{port: 5432}]
"""


async def test_netpolicy_through_the_cli(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, _ = cluster
    config = str(tmp_path / "coord" / "admin" / "config.json")

    async def cli(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, app, [*args, "--config", config])

    good, bad = tmp_path / "p.yaml", tmp_path / "bad.yaml"
    good.write_bytes(POLICY)
    bad.write_bytes(POLICY.replace(b"port: 5432", b"port: 70000"))
    r = await cli("netpolicy", "apply", "-f", str(bad))
    assert r.exit_code == 1
    assert "ingress[0].ports[0].port: 70000 must be a whole number in 1..65535" in r.output
    assert (await coord.state.netpolicies.list()).records == ()  # nothing stored
    r = await cli("netpolicy", "apply", "-f", str(good))
    assert r.exit_code == 0, r.output
    assert "network policy db-from-web applied (namespace db)" in r.output
    r = await cli("netpolicy", "get")
    assert r.exit_code == 0, r.output
    for w in ("db-from-web", "app=db", "allow from web[tier=front] to tcp/5432"):
        assert w in r.output, r.output
    r = await cli("netpolicy", "get", "db-from-web", "-o", "json")
    assert r.exit_code == 0 and '"namespace": "db"' in r.output, r.output
    r = await cli("netpolicy", "delete", "db-from-web")
    assert r.exit_code == 0, r.output
    r = await cli("netpolicy", "delete", "db-from-web")
    assert r.exit_code == 1 and "network policy 'db-from-web' not found" in r.output


class _NoHostNetwork(AgentNetwork):
    """The agent's network with its prerequisites refused (no bridge, nft or DNS on the test
    host: state ``off``) but its config followed, counting the service changes it applied."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **{**kw, "prerequisite": lambda: "test: no host networking"})
        self.changes_alone = 0

    def update_services(self, update: pb.NetworkServicesUpdate) -> pb.NetworkConfig | None:
        got = super().update_services(update)
        self.changes_alone += got is not None
        return got


async def test_service_changes_reach_agents_alone_over_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator and two real agents over gRPC: a service appearing and going is sent to
    each agent as a change alone (``NetworkServicesUpdate``), and each agent's table then equals
    the whole message the coordinator would send it."""
    monkeypatch.setattr("cloudless.agent.agent.AgentNetwork", _NoHostNetwork)
    cfg = replace(coordinator_config(tmp_path), network=AddressPlanConfig())
    coord = Coordinator(cfg)
    task = asyncio.create_task(coord.run())
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp_path / "coord" / "admin" / "config.json"))
    agents: list[Agent] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        for i in range(2):
            token = await asyncio.to_thread(client.create_token)
            a = replace(agent_config(tmp_path, cfg.api_url, token, i), container_network=True)
            agents.append(Agent(a, FakeRuntime(SystemClock())))
            tasks.append(asyncio.create_task(agents[-1].run()))
        pub = coord.network_publisher
        assert pub is not None

        def nets() -> list[_NoHostNetwork]:
            return [a.network for a in agents if isinstance(a.network, _NoHostNetwork)]

        def in_step(names: list[str]) -> bool:
            out = []
            for n in nets():
                held = n._desired
                if held is None or n.node_name not in pub._bases:
                    return False
                out.append(
                    [s.name for s in held.services] == names and held == pub.config_for(n.node_name)
                )
            return len(out) == 2 and all(out)

        await wait_for(lambda: in_step([]), what="both agents hold their network")
        # no replicas: nothing but the service table changes for the agents
        await asyncio.to_thread(client.apply, WEB.replace(b"replicas: 2", b"replicas: 0"))
        await wait_for(lambda: in_step(["web"]), what="both agents hold the web service")
        assert [n.changes_alone for n in nets()] == [1, 1]
        await asyncio.to_thread(client.call, "DELETE", "/v1/workloads/web")
        await wait_for(lambda: in_step([]), what="web gone from both agents")
        assert [n.changes_alone for n in nets()] == [2, 2]
    finally:
        for t in [*tasks, task]:
            t.cancel()
        await asyncio.gather(*tasks, task, return_exceptions=True)
