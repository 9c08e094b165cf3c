"""``cloudless ca rotate`` and ``--abort`` on three coordinators, each with its embedded etcd
member (real etcd 3.4, mutual TLS on loopback), and two agents.

First a plain restart: the leader's etcd member is killed and its supervisor starts it again;
the leader keeps its term (its etcd client has every member's address and carries on through
the others).

A rotation runs to ``done``: every member's serving and client certificate end on the new
root, each member restarted twice (trust, retire), one at a time, with at least two of three
members answering with a leader at every sample; the retired root leaves etcd's trusted-CA
file (an old-root client certificate is refused). A second rotation aborted in ``issue`` goes
back: the etcd certificates return to the root before it, the new root leaves etcd's file
(``untrust``), agents and the admin config follow, and an abort after it is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from cloudless.agent.agent import Agent
from cloudless.cli.ca_cmd import follow_rotation
from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.cli.trust import own_issuer, renew_self, trust_also
from cloudless.clusterops.etcd_tls import EtcdTlsFollower
from cloudless.coordinator.wiring.config import CoordinatorConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.runtime.fake import FakeRuntime
from cloudless.security.bundle import (
    TrustBundle,
    certificate_digest,
    load_pem_certificates,
    trust_report,
)
from cloudless.store.errors import StoreError
from cloudless.store.etcd_admin import endpoint_status
from cloudless.store.etcd_process import EtcdMember
from cloudless.store.tls import ClientTls

from .harness import agent_config, wait_for
from .test_ha import config as ha_config

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


def config(tmp: Path, name: str, **kw: Any) -> CoordinatorConfig:
    """``test_ha``'s coordinator config with the default election TTL (5 s): each etcd member
    restart may move the leadership, and a 2 s lease is shorter than a restart under load."""
    return dataclasses.replace(
        ha_config(tmp, name, **kw), election_ttl=5, etcd_follows_rotation=True
    )


def _follower(c: Coordinator) -> EtcdTlsFollower:
    f = c.rotation.etcd
    assert isinstance(f, EtcdTlsFollower)
    return f


def _etcd_roots(c: Coordinator) -> set[str]:
    pem = (c.config.tls_dir / "etcd-ca.pem").read_bytes()
    return {certificate_digest(r) for r in load_pem_certificates(pem)}


def _issuer(c: Coordinator, name: str) -> str:
    cert = x509.load_pem_x509_certificate((c.config.tls_dir / name).read_bytes())
    bundle = TrustBundle.of([*c.ca.trust_bundle.roots])
    root = bundle.issuer_of(cert)
    return certificate_digest(root) if root is not None else ""


def _agent_trust(a: Agent) -> tuple[list[str], str]:
    ident = a.identity
    assert ident is not None
    return trust_report(ident.cert_pem, ident.ca_pem)


def _client_tls(c: Coordinator) -> ClientTls:
    d = c.config.tls_dir
    return ClientTls.from_files(d / "etcd-ca.pem", d / "etcd-client.crt", d / "etcd-client.key")


class QuorumWatch:
    """Samples every member's status (fresh connections) every 0.2 s; ``fewest`` is the
    smallest number of members that answered with a leader in one sample. A member has 2 s
    to answer: on the shared 2-core box a fresh handshake and status call took over 1 s now
    and then (one of six runs saw a second member miss a 1 s limit while one restarted)."""

    def __init__(self, coords: list[Coordinator]) -> None:
        self.coords = coords
        self.fewest = len(coords)
        self.samples = 0

    async def _answers(self, endpoint: str) -> bool:
        for c in self.coords:  # any coordinator's current client files will do
            try:
                st = await endpoint_status(endpoint, _client_tls(c), rpc_timeout=2.0)
            except (StoreError, OSError, ValueError):
                continue
            if st.leader:
                return True
        return False

    async def run(self) -> None:
        endpoints = [f"127.0.0.1:{c.config.etcd_client_port}" for c in self.coords]
        while True:
            up = await asyncio.gather(*(self._answers(e) for e in endpoints))
            self.fewest = min(self.fewest, sum(up))
            self.samples += 1
            await asyncio.sleep(0.2)


def _retrying(fn: Callable[[], Any]) -> Any:
    """``fn()``; a moment without a leader (503) is waited out for up to 20 s, as a user
    would retry (leadership may move while an etcd member restarts under a 2 s TTL)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return fn()
        except ApiError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _api(cfg: ClientConfig, method: str, path: str, body: object = None) -> Any:
    return _retrying(lambda: Client(cfg).call(method, path, body))


def _follow(cfg: ClientConfig, rotation_id: str) -> list[str]:
    return list(follow_rotation(cfg, rotation_id, timeout_s=240))


async def test_rotation_and_abort_carry_etcd_along(tmp_path: Path) -> None:
    coords: dict[str, Coordinator] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        c1 = Coordinator(config(tmp_path, "c1", bootstrap=True))
        coords["c1"] = c1
        tasks.append(asyncio.create_task(c1.run()))
        await asyncio.wait_for(c1.ready.wait(), 60)
        admin = tmp_path / "c1" / "admin" / "config.json"
        client = Client(ClientConfig.load(admin))
        for name in ("c2", "c3"):
            tok = await asyncio.to_thread(client.create_token, use="coordinator-join")
            c = Coordinator(config(tmp_path, name, join=c1.config.api_url, join_token=tok))
            coords[name] = c
            tasks.append(asyncio.create_task(c.run()))
            await asyncio.wait_for(c.ready.wait(), 90)
        cs = list(coords.values())
        cfg = ClientConfig.load(admin)
        cfg.servers = [c.config.api_url for c in cs]
        agents: list[Agent] = []
        for i in range(2):
            tok = await asyncio.to_thread(Client(cfg).create_token)
            a = Agent(agent_config(tmp_path, c1.config.api_url, tok, i), FakeRuntime(SystemClock()))
            agents.append(a)
            tasks.append(asyncio.create_task(a.run()))
        await wait_for(
            lambda: [n["state"] for n in Client(cfg).nodes()] == ["ready"] * 2,
            timeout=30,
            what="2 ready nodes",
        )
        # ---- a plain restart of the leader's etcd member by its supervisor -----------------
        await wait_for(
            lambda: all(len(_follower(c).store.endpoints) == 3 for c in cs),
            what="every coordinator's etcd client knows all three members",
        )
        leader = next(c for c in cs if c.election.is_leader())
        term = leader.election.fence().compares[1].operand
        member = leader.etcd
        assert isinstance(member, EtcdMember)
        before = member.restarts
        t_kill = time.monotonic()  # the member's clock (SystemClock) is time.monotonic
        member.kill()
        await wait_for(
            lambda: member.restarts > before and (member.last_healthy_at or 0.0) > t_kill,
            timeout=30,
            what="the supervisor restarted the member",
        )
        member_down = time.monotonic() - t_kill
        await wait_for(leader.election.is_leader, timeout=5, what="the leader leading again")
        assert leader.election.fence().compares[1].operand == term, "the leader lost its term"
        assert all(c.election.leader() == leader.election.value for c in cs)

        root0 = c1.ca.digest
        old_client = _client_tls(coords["c2"])
        watch = QuorumWatch(cs)
        tasks.append(asyncio.create_task(watch.run()))

        # ---- a rotation to done ---------------------------------------------------------
        t0 = time.monotonic()
        rot = await asyncio.to_thread(_api, cfg, "POST", "/v1/ca/rotate", {"overlap_s": 0})
        trust_also(cfg, rot["new_cert_pem"].encode())  # as `cloudless ca rotate` does
        lines = await asyncio.to_thread(_follow, cfg, rot["id"])
        took = time.monotonic() - t0
        root1 = rot["new_digest"]
        assert lines[-1].endswith("the old root is no longer trusted"), lines
        await wait_for(
            lambda: all(c.rotation.applied == (rot["id"], "done") for c in cs),
            what="every coordinator applied done",
        )
        for c in cs:
            name = c.config.name
            assert c.ca.digest == root1 and c.ca.trust_bundle.digests == (root1,), name
            assert _etcd_roots(c) == {root1}, name  # the retired root is gone
            assert _issuer(c, "etcd-member.crt") == root1, name
            assert _issuer(c, "etcd-client.crt") == root1, name
            f = _follower(c)
            # restarts: trust and retire; certificates: issue
            assert (f.restarts, f.reissues) == (2, 1), (name, f.restarts, f.reissues)
        assert watch.fewest >= 2, f"a sample saw only {watch.fewest} members answering"
        samples_after_rotation = watch.samples
        # etcd refuses a client certificate from the retired root, takes the current one
        for c in cs:
            endpoint = f"127.0.0.1:{c.config.etcd_client_port}"
            mixed = ClientTls(_client_tls(c).ca_pem, old_client.cert_pem, old_client.key_pem)
            with pytest.raises(StoreError):
                await endpoint_status(endpoint, mixed, rpc_timeout=2.0)
            await endpoint_status(endpoint, _client_tls(c), rpc_timeout=2.0)
        for a in agents:
            await wait_for(lambda a=a: _agent_trust(a) == ([root1], root1), what="agent on root1")
        spec = b"name: after\nimage: busybox\nresources: {cpu: 10m, memory: 1Mi}\n"
        await asyncio.to_thread(_retrying, lambda: Client(cfg).apply(spec))
        # too late to abort a finished rotation
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(_api, cfg, "POST", "/v1/ca/rotate/abort")
        assert e.value.status == 409 and "too late to abort" in e.value.message

        # ---- a second rotation, aborted in issue ------------------------------------------
        rot2 = await asyncio.to_thread(_api, cfg, "POST", "/v1/ca/rotate", {"overlap_s": 3600})
        root2 = rot2["new_digest"]
        trust_also(cfg, rot2["new_cert_pem"].encode())
        await wait_for(
            lambda: all(c.rotation.applied == (rot2["id"], "issue") for c in cs),
            timeout=120,
            what="every coordinator applied issue",
        )
        await asyncio.to_thread(_retrying, lambda: renew_self(cfg))  # as `ca rotate` would
        assert own_digest(cfg) == root2
        assert all(_issuer(c, "etcd-member.crt") == root2 for c in cs)
        assert all(_etcd_roots(c) == {root1, root2} for c in cs)
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(_api, cfg, "POST", "/v1/ca/rotate/abort", {"overlap_s": "soon"})
        assert e.value.status == 400 and "overlap_s: 'soon'" in e.value.message
        t1 = time.monotonic()
        aborted = await asyncio.to_thread(
            _api, cfg, "POST", "/v1/ca/rotate/abort", {"overlap_s": 0}
        )
        assert (aborted["phase"], aborted["aborted_from"]) == ("revert", "issue")
        lines = await asyncio.to_thread(_follow, cfg, rot2["id"])
        abort_took = time.monotonic() - t1
        assert lines[-1].endswith("the new root is no longer trusted"), lines
        assert any("renewed from the old root" in line for line in lines), lines
        await wait_for(
            lambda: all(c.rotation.applied == (rot2["id"], "aborted") for c in cs),
            what="every coordinator applied aborted",
        )
        for c in cs:
            name = c.config.name
            assert c.ca.digest == root1 and c.ca.trust_bundle.digests == (root1,), name
            assert _etcd_roots(c) == {root1}, name  # untrust dropped root2
            assert _issuer(c, "etcd-member.crt") == root1, name
            assert _issuer(c, "etcd-client.crt") == root1, name
            f = _follower(c)
            # restarts: trust, retire, trust, untrust; certificates: issue, issue, revert
            assert (f.restarts, f.reissues) == (4, 3), (name, f.restarts, f.reissues)
        assert watch.fewest >= 2 and watch.samples > samples_after_rotation
        for a in agents:
            await wait_for(
                lambda a=a: _agent_trust(a) == ([root1], root1), what="agent back on root1"
            )
        assert own_digest(cfg) == root1
        await asyncio.to_thread(_retrying, lambda: Client(cfg).apply(spec.replace(b"1Mi", b"2Mi")))
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(_api, cfg, "POST", "/v1/ca/rotate/abort")
        assert e.value.status == 409 and "aborted already" in e.value.message
        assert root0 != root1 != root2
        print(
            f"leader's etcd member killed: back in {member_down:.1f}s, same term; "
            f"rotation with 3 etcd members and 2 agents: {took:.1f}s to done; abort in issue: "
            f"{abort_took:.1f}s to aborted; fewest members answering in {watch.samples} "
            f"samples: {watch.fewest}"
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


def own_digest(cfg: ClientConfig) -> str:
    return own_issuer(cfg)
