"""``cloudless ca rotate --abort`` on a live cluster: a coordinator (real mTLS gRPC and HTTPS
on loopback) and two agents. A rotation to ``done`` runs on a real multi-host cluster with
real containerd replicas in ``tests/integration/multihost/test_netns_two_agents.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudless.agent.agent import Agent
from cloudless.cli.ca_cmd import follow_rotation
from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.trust import own_issuer, renew_self, trust_also
from cloudless.lib.clock import SystemClock
from cloudless.runtime.fake import FakeRuntime
from cloudless.security.bundle import TrustBundle, trust_report

from .harness import agent_config, wait_for


def _node(a: Agent) -> str:
    assert a.identity is not None
    return a.identity.node_id


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

        # an agent that reconnects does so with the certificate it renewed in the abort
        link = agents[1].link
        assert link is not None
        link.reconnect()
        node1 = _node(agents[1])
        await wait_for(
            lambda: coord.agents.dispatcher.sessions.get(node1) not in (None, sessions[node1]),
            what="agent 1 reconnected with its renewed certificate",
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
