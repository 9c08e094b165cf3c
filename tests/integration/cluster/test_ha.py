"""Three coordinators, each with its own embedded etcd member (real etcd, mutual TLS, on
loopback): the second and third join with coordinator-join tokens. Kill the leader and
scheduling resumes on the new leader; agents follow the redirect."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from pathlib import Path

import pytest

from cloudless.agent.agent import Agent
from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.wiring.config import CoordinatorConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.clock import SystemClock
from cloudless.lib.net import free_port
from cloudless.runtime.fake import FakeRuntime

from .harness import agent_config, wait_for

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


def config(tmp: Path, name: str, **kw: object) -> CoordinatorConfig:
    return CoordinatorConfig(
        data_dir=tmp / name,
        name=name,
        store="etcd",
        api_port=free_port(),
        agent_port=free_port(),
        enroll_port=free_port(),
        etcd_client_port=free_port(),
        etcd_peer_port=free_port(),
        root_key_size=2048,
        bcrypt_cost=4,
        election_ttl=2,
        **kw,  # type: ignore[arg-type]
    )


async def test_three_coordinators_failover(tmp_path: Path) -> None:
    coords: dict[str, Coordinator] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    agents: list[asyncio.Task[None]] = []
    try:
        c1 = Coordinator(config(tmp_path, "c1", bootstrap=True))
        coords["c1"], tasks["c1"] = c1, asyncio.create_task(c1.run())
        await asyncio.wait_for(c1.ready.wait(), 60)
        admin = tmp_path / "c1" / "admin" / "config.json"
        client = Client(ClientConfig.load(admin))
        for name in ("c2", "c3"):
            tok = await asyncio.to_thread(client.create_token, use="coordinator-join")
            c = Coordinator(config(tmp_path, name, join=c1.config.api_url, join_token=tok))
            coords[name], tasks[name] = c, asyncio.create_task(c.run())
            await asyncio.wait_for(c.ready.wait(), 90)
        # every coordinator knows the others; the client may use any of them
        cfg = ClientConfig.load(admin)
        cfg.servers = [c.config.api_url for c in coords.values()]
        client = Client(cfg)
        listing = await asyncio.to_thread(client.call, "GET", "/v1/cluster/coordinators")
        assert sorted(c["name"] for c in listing["coordinators"]) == ["c1", "c2", "c3"]

        for i in range(3):
            tok = await asyncio.to_thread(client.create_token)
            a = Agent(agent_config(tmp_path, c1.config.api_url, tok, i), FakeRuntime(SystemClock()))
            agents.append(asyncio.create_task(a.run()))
        await wait_for(
            lambda: [n["state"] for n in client.nodes()] == ["ready"] * 3,
            timeout=30,
            what="3 ready nodes",
        )

        leader = next(n for n, c in coords.items() if c.election.is_leader())
        # kill -9 the leader's etcd and stop the leader coordinator
        coords[leader].etcd.kill()  # type: ignore[union-attr]
        tasks[leader].cancel()
        t0 = time.monotonic()
        rest = [n for n in coords if n != leader]
        cfg.servers = [coords[n].config.api_url for n in rest]
        client = Client(cfg)
        await wait_for(
            lambda: any(coords[n].election.is_leader() for n in rest),
            timeout=30,
            what="a new leader",
        )
        failover = time.monotonic() - t0
        # scheduling resumes on the new leader: apply through a follower (redirected)
        spec = b"name: web\nimage: busybox\nreplicas: 2\nresources: {cpu: 10m, memory: 8Mi}\n"
        await wait_for(lambda: _try_apply(client, spec), timeout=30, what="apply accepted")
        await wait_for(
            lambda: (
                sum(r["observed"] == "running" for r in client.workload("web")["replicas"]) == 2
            ),
            timeout=30,
            what="2 running replicas under the new leader",
        )
        print(f"leader failover took {failover:.2f}s")
    finally:
        for t in [*agents, *tasks.values()]:
            t.cancel()
        # Bounded, and without cancelling again (wait_for would, and then wait for ever on a
        # task that ignores it): a coordinator or agent stuck in shutdown fails this test with
        # its stack, instead of hanging the suite.
        _, pending = await asyncio.wait([*agents, *tasks.values()], timeout=60)
        stuck = []
        for t in pending:
            buf = io.StringIO()
            t.print_stack(limit=20, file=buf)
            stuck.append(buf.getvalue())
        assert not pending, "stuck in shutdown:\n" + "\n".join(stuck)


def _try_apply(client: Client, spec: bytes) -> bool:
    try:
        client.apply(spec)
        return True
    except Exception:
        return False
