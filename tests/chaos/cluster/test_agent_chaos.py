"""Agent-side chaos on a real cluster (one coordinator with embedded etcd, three agents each
with its own containerd, each in a network namespace). Every scenario is bounded, ends by
itself and checks the invariants of ``conftest.settled`` afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest

from cloudless.devenv.cluster import NetnsCluster

from .conftest import Writes, assert_settles, report, running_replicas, timed

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


async def _deploy(c: NetnsCluster, name: str = "web", n: int = 3) -> Writes:
    w = Writes(c)
    assert await asyncio.to_thread(w.apply, name, n)
    await assert_settles(c, w, 90)
    return w


def _victim(c: NetnsCluster, name: str = "web") -> tuple[int, str]:
    """(agent index, replica id) of a running replica."""
    r = running_replicas(c, name)[0]
    return c.node_ids.index(r["node_id"]), r["id"]


async def test_kill9_agent_replaced_then_adopted_without_duplicates(cluster: NetnsCluster) -> None:
    """kill -9 an agent: its container keeps running, the node goes offline, the replica is
    replaced elsewhere; the restarted agent stops the superseded container."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    t0 = time.monotonic()
    c.kill_agent(i)
    assert c.tasks(i).get(rid) == "RUNNING", "the container must outlive its agent"
    offline = await timed("node offline", lambda: c.node_state(i) == "offline", 30)
    await timed(
        "a replacement running elsewhere",
        lambda: len([r for r in running_replicas(c, "web") if r["node_id"] != c.node_ids[i]]) == 3,
        60,
    )
    replaced = time.monotonic() - t0
    assert c.tasks(i).get(rid) == "RUNNING", "nothing may stop it while its agent is away"
    assert await asyncio.to_thread(w.apply, "api", 2)  # a write while the node is down
    t1 = time.monotonic()
    await c.start_agent(i)
    await timed("node ready again", lambda: c.node_state(i) == "ready", 60)
    back = time.monotonic() - t1
    settle = await assert_settles(c, w, 60)
    report(
        "kill9-agent",
        offline_s=offline,
        replaced_s=replaced,
        rejoin_s=back,
        settle_after_rejoin_s=settle,
    )
