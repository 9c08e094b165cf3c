"""``cloudless ca rotate`` on a live cluster: a coordinator (real mTLS gRPC and HTTPS on
loopback) and three agents running a workload. The rotation runs to ``done`` with no agent
stream re-opened and no container restarted; afterwards every certificate chains to the new
root, an agent that reconnects does so with its new certificate, a new agent enrolls, and a
certificate from the old root is refused on both the HTTPS and the gRPC port."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest

from cloudless.agent.agent import Agent
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.cli.ca_cmd import follow_rotation
from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.trust import own_issuer, renew_self, trust_also
from cloudless.lib.clock import SystemClock
from cloudless.lib.errors import CloudlessError
from cloudless.runtime.fake import FakeRuntime
from cloudless.security.bundle import TrustBundle, trust_report

from .harness import agent_config, wait_for

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f]
resources: {cpu: 100m, memory: 16Mi}
replicas: 3
"""


def _copy_config(src: Path, dst: Path) -> ClientConfig:
    """A copy of a client config (key, cert, bundle) as it is now."""
    dst.mkdir(mode=0o700)
    for f in src.parent.iterdir():
        shutil.copy2(f, dst / f.name)
    return ClientConfig.load(dst / src.name)


def _node(a: Agent) -> str:
    assert a.identity is not None
    return a.identity.node_id


async def _containers(runtimes: list[FakeRuntime]) -> dict[str, float | None]:
    """Every container by id with its start time: a restart would change either."""
    return {c.id: c.started_at for rt in runtimes for c in await rt.list_containers()}


async def test_ca_rotate_keeps_links_and_workloads(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, client, _agents, _start = cluster
    admin_path = tmp_path / "coord" / "admin" / "config.json"
    old_admin = _copy_config(admin_path, tmp_path / "old-admin")
    old_digest = coord.ca.digest

    agents: list[Agent] = []
    runtimes: list[FakeRuntime] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(3):
            token = await asyncio.to_thread(client.create_token)
            rt = FakeRuntime(SystemClock())
            a = Agent(agent_config(tmp_path, coord.config.api_url, token, i), rt)
            agents.append(a)
            runtimes.append(rt)
            tasks.append(asyncio.create_task(a.run()))
        await wait_for(
            lambda: [n["state"] for n in client.nodes()] == ["ready"] * 3, what="3 ready nodes"
        )
        await asyncio.to_thread(client.apply, WEB)

        def running() -> int:
            c = Client(ClientConfig.load(admin_path))  # follows the config's renewal
            return sum(r["observed"] == "running" for r in c.workload("web")["replicas"])

        await wait_for(lambda: running() == 3, what="3 running replicas")
        containers = await _containers(runtimes)
        sessions = {_node(a): coord.agents.dispatcher.sessions[_node(a)] for a in agents}
        old_node = (agents[0].identity.key_pem, agents[0].identity.cert_pem)  # type: ignore[union-attr]

        # -- rotate, as `cloudless ca rotate --overlap 2s` does -----------------------------
        cfg = ClientConfig.load(admin_path)
        rot = await asyncio.to_thread(Client(cfg).call, "POST", "/v1/ca/rotate", {"overlap_s": 2})
        assert rot["phase"] == "trust" and rot["old_digest"] == old_digest
        new_digest = rot["new_digest"]
        trust_also(cfg, rot["new_cert_pem"].encode())  # the config trusts both roots now
        assert len(TrustBundle.from_pem(cfg.ca_file.read_bytes()).roots) == 2
        lines = await asyncio.wait_for(
            asyncio.to_thread(lambda: list(follow_rotation(cfg, rot["id"], 120, 0.2))), 150
        )
        assert lines[-1].endswith("no longer trusted"), lines
        assert any(line.startswith("issue") for line in lines), lines

        # -- every certificate and bundle is on the new root only --------------------------
        assert coord.ca.digest == new_digest
        assert coord.ca.trust_bundle.digests == (new_digest,)
        for a in agents:
            assert a.identity is not None
            report = trust_report(a.identity.cert_pem, a.identity.ca_pem)
            assert report == ([new_digest], new_digest)
        assert own_issuer(cfg) == new_digest
        assert TrustBundle.from_pem(cfg.ca_file.read_bytes()).digests == (new_digest,)
        own = (tmp_path / "coord" / "tls" / "coordinator.crt").read_bytes()
        assert trust_report(own, coord.ca.bundle_pem)[1] == new_digest

        # -- nothing was interrupted: same sessions (no stream re-opened), same containers --
        for node_id, s in sessions.items():
            assert coord.agents.dispatcher.sessions.get(node_id) is s, f"{node_id} reconnected"
        assert await _containers(runtimes) == containers
        assert await asyncio.to_thread(running) == 3
        status = await asyncio.to_thread(Client(cfg).call, "GET", "/v1/ca/status")
        assert status["rotation_run"]["phase"] == "done"
        assert [r["role"] for r in status["roots"]] == ["issuing"]

        # -- new connections use the new material -------------------------------------------
        link = agents[1].link
        assert link is not None
        link.reconnect()
        node1 = agents[1].identity.node_id  # type: ignore[union-attr]
        await wait_for(
            lambda: coord.agents.dispatcher.sessions.get(node1) not in (None, sessions[node1]),
            what="agent 1 reconnected with its new certificate",
        )
        token = await asyncio.to_thread(Client(cfg).create_token)
        late_cfg = agent_config(tmp_path, coord.config.api_url, token, 5)
        tasks.append(asyncio.create_task(Agent(late_cfg, FakeRuntime(SystemClock())).run()))
        await wait_for(
            lambda: [n["state"] for n in Client(cfg).nodes()].count("ready") == 4,
            what="a new agent enrolled after the rotation",
        )

        # -- the old root is refused ---------------------------------------------------------
        old = ClientConfig(cfg.servers, cfg.ca_file, old_admin.cert_file, old_admin.key_file)
        with pytest.raises(CloudlessError) as caught:
            await asyncio.to_thread(Client(old).call, "GET", "/v1/nodes")
        assert "no coordinator answered" in str(caught.value)  # the handshake fails
        creds = grpc.ssl_channel_credentials(
            root_certificates=cfg.ca_file.read_bytes(),
            private_key=old_node[0],
            certificate_chain=old_node[1],
        )
        async with grpc.aio.secure_channel(coord.config.agent_endpoint, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as rpc:
                await pbg.AgentControlStub(ch).Renew(pb.RenewRequest(csr_pem=b""), timeout=5)
        assert rpc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_ca_rotate_abort_in_issue_goes_back(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`cloudless ca rotate --abort` in the issue phase, live: agents (and the config) that
    renewed from the new root renew from the old one again, every bundle ends with the old
    root only, no agent stream is re-opened; aborting again, or after it, is refused."""
    coord, client, _agents, _start = cluster
    admin_path = tmp_path / "coord" / "admin" / "config.json"
    old_digest = coord.ca.digest
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(2):
            token = await asyncio.to_thread(client.create_token)
            a = Agent(
                agent_config(tmp_path, coord.config.api_url, token, i), FakeRuntime(SystemClock())
            )
            agents.append(a)
            tasks.append(asyncio.create_task(a.run()))
        await wait_for(
            lambda: [n["state"] for n in client.nodes()] == ["ready"] * 2, what="2 ready nodes"
        )
        sessions = {_node(a): coord.agents.dispatcher.sessions[_node(a)] for a in agents}
        cfg = ClientConfig.load(admin_path)
        # a long overlap holds the rotation in issue once every certificate is renewed
        rot = await asyncio.to_thread(
            Client(cfg).call, "POST", "/v1/ca/rotate", {"overlap_s": 3600}
        )
        new_digest = rot["new_digest"]
        trust_also(cfg, rot["new_cert_pem"].encode())

        def on(digest: str) -> bool:
            return all(
                a.identity is not None
                and trust_report(a.identity.cert_pem, a.identity.ca_pem)[1] == digest
                for a in agents
            )

        await wait_for(lambda: on(new_digest), timeout=60, what="agents renewed from the new root")
        await asyncio.to_thread(renew_self, cfg)
        assert own_issuer(cfg) == new_digest

        # -- abort ----------------------------------------------------------------------------
        with pytest.raises(ApiError) as bad:
            await asyncio.to_thread(
                Client(cfg).call, "POST", "/v1/ca/rotate/abort", {"overlap_s": -1}
            )
        assert bad.value.status == 400 and "overlap_s: -1" in bad.value.message
        res = await asyncio.to_thread(
            Client(cfg).call, "POST", "/v1/ca/rotate/abort", {"overlap_s": 0}
        )
        assert (res["phase"], res["aborted_from"]) == ("revert", "issue")
        with pytest.raises(ApiError) as again:
            await asyncio.to_thread(Client(cfg).call, "POST", "/v1/ca/rotate/abort")
        assert again.value.status == 409 and "being aborted already" in again.value.message
        lines = await asyncio.wait_for(
            asyncio.to_thread(lambda: list(follow_rotation(cfg, rot["id"], 120, 0.2))), 150
        )
        assert lines[-1].endswith("the new root is no longer trusted"), lines
        assert any("renewed from the old root" in line for line in lines), lines

        assert coord.ca.digest == old_digest
        assert coord.ca.trust_bundle.digests == (old_digest,)
        for a in agents:
            assert a.identity is not None
            assert trust_report(a.identity.cert_pem, a.identity.ca_pem) == (
                [old_digest],
                old_digest,
            )
        assert own_issuer(cfg) == old_digest
        assert TrustBundle.from_pem(cfg.ca_file.read_bytes()).digests == (old_digest,)
        for node_id, s in sessions.items():
            assert coord.agents.dispatcher.sessions.get(node_id) is s, f"{node_id} reconnected"
        with pytest.raises(ApiError) as late:
            await asyncio.to_thread(Client(cfg).call, "POST", "/v1/ca/rotate/abort")
        assert late.value.status == 409 and "aborted already" in late.value.message
        status = await asyncio.to_thread(Client(cfg).call, "GET", "/v1/ca/status")
        assert status["rotation_run"]["phase"] == "aborted"
        assert [r["role"] for r in status["roots"]] == ["issuing"]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
