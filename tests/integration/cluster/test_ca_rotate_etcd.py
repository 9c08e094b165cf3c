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
(``untrust``), agents and the admin config follow, and an abort after it is refused.

Then the leader dies (its etcd member killed, the coordinator stopped): the two left elect a
new leader and scheduling resumes there (an apply through them, replicas running on the
agents, which follow the redirect). Last, with that member dead, removing a healthy
coordinator would leave etcd without a quorum and is refused with nothing changed; removing
the dead one succeeds and etcd is left with two voting members.

(One cluster for all of it: each start of three coordinators costs 15-25 s of CI time; this
test took over ``test_ha``'s failover and ``test_coordinator_remove``'s removal.)"""

from __future__ import annotations

import asyncio
import dataclasses
import io
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
from cloudless.observability.store import unwrapped
from cloudless.runtime.fake import FakeRuntime
from cloudless.security.bundle import (
    TrustBundle,
    certificate_digest,
    load_pem_certificates,
    trust_report,
)
from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_admin import EtcdAdmin, endpoint_status
from cloudless.store.etcd_process import EtcdMember
from cloudless.store.tls import ClientTls

from .harness import agent_config, ha_config, wait_for

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


def config(tmp: Path, name: str, **kw: Any) -> CoordinatorConfig:
    """The harness's etcd-backed coordinator, following rotations (the default, spelled out),
    with the default election TTL (5 s): a 2 s lease is shorter than a member restart under
    load."""
    return dataclasses.replace(ha_config(tmp, name, **kw), etcd_follows_rotation=True)


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
    """Samples every member's status (fresh connections) every 0.2 s. ``fewest`` is the
    smallest number of members that answered with a leader in one sample; ``longest_short``
    the longest stretch (seconds) during which fewer than two did.

    A quorum is kept when a leader is re-elected within raft's election time, not when every
    sample sees two members with a leader: a raft leader that restarts hands over first, but
    etcd gives up the hand-over ("leadership transfer failed: unhealthy cluster") when no peer
    has been connected for long (right after another member's restart), and the two left
    then elect one after the election timeout (1 s). One of six runs saw such a sample.
    A member has 2 s to answer: on the shared 2-core box a fresh handshake and status call
    took over 1 s now and then."""

    def __init__(self, coords: list[Coordinator]) -> None:
        self.coords = coords
        self.fewest = len(coords)
        self.samples = 0
        self.longest_short = 0.0
        self._short_since: float | None = None

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
            t = time.monotonic()
            up = sum(await asyncio.gather(*(self._answers(e) for e in endpoints)))
            self.fewest = min(self.fewest, up)
            if up >= 2:
                self._short_since = None
            else:
                self._short_since = self._short_since or t
                self.longest_short = max(self.longest_short, time.monotonic() - self._short_since)
            self.samples += 1
            await asyncio.sleep(0.2)

    def kept_quorum(self) -> str:
        """Empty if fewer than two members answered with a leader for at most 3 s at a time,
        else why not."""
        if self.longest_short <= 3.0:
            return ""
        return f"fewer than two members answered with a leader for {self.longest_short:.1f}s"


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
    ctasks: dict[str, asyncio.Task[None]] = {}
    try:
        c1 = Coordinator(config(tmp_path, "c1", bootstrap=True))
        coords["c1"] = c1
        ctasks["c1"] = asyncio.create_task(c1.run())
        tasks.append(ctasks["c1"])
        await asyncio.wait_for(c1.ready.wait(), 60)
        admin = tmp_path / "c1" / "admin" / "config.json"
        client = Client(ClientConfig.load(admin))
        for name in ("c2", "c3"):
            tok = await asyncio.to_thread(client.create_token, use="coordinator-join")
            c = Coordinator(config(tmp_path, name, join=c1.config.api_url, join_token=tok))
            coords[name] = c
            ctasks[name] = asyncio.create_task(c.run())
            tasks.append(ctasks[name])
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
        watching = asyncio.create_task(watch.run())
        tasks.append(watching)

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
        assert not watch.kept_quorum(), watch.kept_quorum()
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
        assert not watch.kept_quorum() and watch.samples > samples_after_rotation
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

        # ---- the leader dies: the two left elect a new one, scheduling resumes -------------
        watching.cancel()
        await wait_for(lambda: any(c.election.is_leader() for c in cs), what="a leader")
        dead = next(c for c in cs if c.election.is_leader())
        rest = [c for c in cs if c is not dead]
        assert isinstance(dead.etcd, EtcdMember)
        t0 = time.monotonic()
        dead.etcd.kill()
        ctasks[dead.config.name].cancel()
        await wait_for(
            lambda: any(c.election.is_leader() for c in rest), timeout=30, what="a new leader"
        )
        failover = time.monotonic() - t0
        cfg.servers = [c.config.api_url for c in rest]
        web = b"name: web\nimage: busybox\nreplicas: 2\nresources: {cpu: 10m, memory: 8Mi}\n"
        await wait_for(lambda: _try_apply(cfg, web), timeout=30, what="apply accepted")
        await wait_for(
            lambda: (
                sum(r["observed"] == "running" for r in Client(cfg).workload("web")["replicas"])
                == 2
            ),
            timeout=30,
            what="2 running replicas under the new leader",
        )

        # ---- removing a coordinator: never below quorum -----------------------------------
        await asyncio.gather(ctasks[dead.config.name], return_exceptions=True)
        leader = next(c for c in rest if c.election.is_leader())
        healthy = next(c for c in rest if c is not leader)
        names = sorted(c.config.name for c in cs)
        assert await _members(leader) == names
        cfg.servers = [leader.config.api_url]
        # 3 voters, one dead: removing the healthy follower leaves 2 (leader + dead), quorum
        # 2, 1 healthy -> refused; nothing changes
        gone = f"/v1/cluster/coordinators/{healthy.config.name}"
        with pytest.raises(ApiError) as e:
            await asyncio.to_thread(_api, cfg, "DELETE", gone)
        assert e.value.status == 409 and "quorum" in e.value.message, e.value.message
        assert await _members(leader) == names
        # removing the dead one leaves 2 healthy of 2, quorum 2 -> done
        res = await asyncio.to_thread(
            _api, cfg, "DELETE", f"/v1/cluster/coordinators/{dead.config.name}"
        )
        assert res["etcd_member_removed"] is True
        two = sorted(c.config.name for c in rest)
        assert await _members(leader) == two
        listed = await asyncio.to_thread(_api, cfg, "GET", "/v1/cluster/coordinators")
        assert sorted(c["name"] for c in listed["coordinators"]) == two
        still = b"name: still\nimage: busybox\nresources: {cpu: 10m, memory: 8Mi}\n"
        await asyncio.to_thread(_retrying, lambda: Client(cfg).apply(still))  # quorum of 2
        print(
            f"leader's etcd member killed: back in {member_down:.1f}s, same term; "
            f"rotation with 3 etcd members and 2 agents: {took:.1f}s to done; abort in issue: "
            f"{abort_took:.1f}s to aborted; fewest members answering in {watch.samples} "
            f"samples: {watch.fewest} (longest below two: {watch.longest_short:.1f}s); "
            f"leader failover {failover:.2f}s"
        )
    finally:
        for t in tasks:
            t.cancel()
        # Bounded, and without cancelling again (wait_for would, and then wait for ever on a
        # task that ignores it): a coordinator or agent stuck in shutdown fails this test with
        # its stack, instead of hanging the suite.
        _, pending = await asyncio.wait(tasks, timeout=60)
        stuck = []
        for t in pending:
            buf = io.StringIO()
            t.print_stack(limit=20, file=buf)
            stuck.append(buf.getvalue())
        assert not pending, "stuck in shutdown:\n" + "\n".join(stuck)


def _try_apply(cfg: ClientConfig, spec: bytes) -> bool:
    try:
        Client(cfg).apply(spec)
        return True
    except Exception:
        return False


async def _members(c: Coordinator) -> list[str]:
    store = unwrapped(c.store)
    assert isinstance(store, EtcdStore)
    return sorted(m.name for m in await EtcdAdmin(store).members())


def own_digest(cfg: ClientConfig) -> str:
    return own_issuer(cfg)
