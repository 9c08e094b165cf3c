"""Agent-side chaos on a real cluster (one coordinator with embedded etcd, three agents each
with its own containerd, each in a network namespace). Every scenario is bounded, ends by
itself and checks the invariants of ``conftest.settled`` afterwards."""

from __future__ import annotations

import asyncio
import signal
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


async def test_kill9_agent_immediate_restart_adopts(cluster: NetnsCluster) -> None:
    """kill -9 an agent and start it again at once: the new agent process adopts the running
    container (same replica, same task) or, if the node was judged offline meanwhile and a
    replacement placed, exactly one of the two survives. Either way: no duplicates."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    pid_before = _task_pid(c, i, rid)
    t0 = time.monotonic()
    c.kill_agent(i)
    await c.start_agent(i)
    # past the 1 s broken-stream grace and the new process's start-up
    seen = await _watch_states(c, i, 6.0)
    await timed("node ready again", lambda: c.node_state(i) == "ready", 30)
    settle = await assert_settles(c, w, 60)
    ids = {r["id"] for r in running_replicas(c, "web")}
    adopted = rid in ids and _task_pid(c, i, rid) == pid_before
    report(
        "kill9-agent-immediate-restart",
        states="/".join(sorted(seen)),
        settle_after_6s=settle,
        adopted=str(adopted),
        total_s=time.monotonic() - t0,
    )


def _task_pid(c: NetnsCluster, i: int, cid: str) -> str:
    import subprocess

    out = subprocess.run(
        ["ctr", "-a", c.containerds[i].address, "-n", c.namespace, "tasks", "ls"],
        capture_output=True,
        text=True,
    ).stdout
    return next((ln.split()[1] for ln in out.splitlines() if ln.split()[:1] == [cid]), "")


async def _watch_states(c: NetnsCluster, i: int, seconds: float) -> set[str]:
    """Node ``i``'s states seen by polling every 0.1 s for ``seconds``."""
    seen: set[str] = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.add(await asyncio.to_thread(c.node_state, i))
        await asyncio.sleep(0.1)
    return seen


@pytest.mark.parametrize("seconds", [1.0, 2.0])
async def test_short_freeze_is_not_an_outage(cluster: NetnsCluster, seconds: float) -> None:
    """SIGSTOP an agent for 1-2 s: its host's kernel still acknowledges TCP, and the
    coordinator's gRPC core waits 5 s for an unanswered PING before it ends the stream
    (``cloudless.lib.keepalive``): the node never goes offline, no replica is replaced."""
    c = cluster
    w = await _deploy(c)
    i, _ = _victim(c)
    before = {r["id"] for r in running_replicas(c, "web")}
    c.freeze_agent(i)
    try:
        seen = await _watch_states(c, i, seconds)
    finally:
        c.thaw_agent(i)
    seen |= await _watch_states(c, i, 3.0)  # and nothing happens late either
    assert seen == {"ready"}, f"node states during a {seconds} s freeze: {seen}"
    assert {r["id"] for r in running_replicas(c, "web")} == before, "a replica was replaced"
    await assert_settles(c, w, 30)
    report(f"freeze-{seconds}s", states="/".join(sorted(seen)), replaced=0)


async def test_long_freeze_replaced_then_no_duplicates_after_thaw(cluster: NetnsCluster) -> None:
    """SIGSTOP an agent for 8 s: offline after the PING timeout (5-6 s) and the 0.5 s
    disconnect grace, replacement elsewhere;
    after SIGCONT the superseded container is stopped (no duplicates, no orphans)."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    t0 = time.monotonic()
    c.freeze_agent(i)
    try:
        offline = await timed("node offline", lambda: c.node_state(i) == "offline", 8)
        await timed(
            "a replacement elsewhere",
            lambda: (
                len([r for r in running_replicas(c, "web") if r["node_id"] != c.node_ids[i]]) == 3
            ),
            30,
        )
        replaced = time.monotonic() - t0
        assert c.tasks(i).get(rid) == "RUNNING", "a frozen agent's container keeps running"
        await asyncio.sleep(max(0.0, 8 - (time.monotonic() - t0)))
    finally:
        c.thaw_agent(i)
    t1 = time.monotonic()
    await timed("node ready after thaw", lambda: c.node_state(i) == "ready", 30)
    back = time.monotonic() - t1
    settle = await assert_settles(c, w, 60)
    report(
        "freeze-8s",
        offline_s=offline,
        replaced_s=replaced,
        ready_after_thaw_s=back,
        settle_after_thaw_s=settle,
    )


async def test_cut_off_then_healed(cluster: NetnsCluster) -> None:
    """Drop all traffic of an agent's host for 10 s: the node goes offline and its replica is
    replaced while its container keeps running on the island; after healing the agent
    reconnects and the extra container is stopped."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    t0 = time.monotonic()
    c.cut(i)
    try:
        offline = await timed("node offline", lambda: c.node_state(i) == "offline", 10)
        await timed(
            "a replacement elsewhere",
            lambda: (
                len([r for r in running_replicas(c, "web") if r["node_id"] != c.node_ids[i]]) == 3
            ),
            30,
        )
        replaced = time.monotonic() - t0
        assert c.tasks(i).get(rid) == "RUNNING", "an island keeps running its containers"
        assert await asyncio.to_thread(w.apply, "api", 2)
        await asyncio.sleep(max(0.0, 10 - (time.monotonic() - t0)))
    finally:
        c.heal(i)
    t1 = time.monotonic()
    await timed("node ready after heal", lambda: c.node_state(i) == "ready", 40)
    back = time.monotonic() - t1
    settle = await assert_settles(c, w, 60)
    report(
        "cut-10s",
        offline_s=offline,
        replaced_s=replaced,
        ready_after_heal_s=back,
        settle_after_heal_s=settle,
    )


async def test_containerd_restart_under_an_agent(cluster: NetnsCluster) -> None:
    """Restart the containerd under an agent: its containers keep running (same tasks), no
    replica is replaced, statuses stay running, and the agent can start new containers
    through the new daemon."""
    c = cluster
    w = await _deploy(c)
    i, _ = _victim(c)
    before = {r["id"] for r in running_replicas(c, "web")}
    tasks_before = {k: v for k, v in c.tasks(i).items() if v == "RUNNING"}
    t0 = time.monotonic()
    await c.restart_containerd(i)
    restart = time.monotonic() - t0
    assert {k: v for k, v in c.tasks(i).items() if v == "RUNNING"} == tasks_before
    seen = await _watch_states(c, i, 3.0)
    assert seen == {"ready"}, f"node states after a containerd restart: {seen}"
    assert {r["id"] for r in running_replicas(c, "web")} == before, "a replica was replaced"
    # the agent still drives containerd: 6 replicas put a second one on every node
    t1 = time.monotonic()
    assert await asyncio.to_thread(w.scale, "web", 6)
    await assert_settles(c, w, 60)
    scale = time.monotonic() - t1
    assert any(
        r["node_id"] == c.node_ids[i] and r["id"] not in before for r in running_replicas(c, "web")
    ), "no new container on the restarted node"
    report("containerd-restart", restart_s=restart, scale_to_6_s=scale)


async def test_full_data_disk(cluster: NetnsCluster) -> None:
    """Fill an agent's data filesystem (a 64 MiB tmpfs) to the last byte: the node reports
    DiskPressure (an event names it), it stays ready, gets no new replicas, and still obeys
    a change it cannot persist (scale to 0: its container stops). After the disk is freed and
    the agent restarted it comes back with its identity and converges: nothing corrupted."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    t0 = time.monotonic()
    c.fill_disk(i, leave_bytes=0)
    try:
        seen = await timed(
            "DiskPressure on the node", lambda: c.node(i)["conditions"]["disk_pressure"], 30
        )
        events = c.api.open("GET", "/v1/events?tail=200").read().decode()
        assert f"node {c.node_ids[i]} conditions: DiskPressure" in events
        assert c.node_state(i) == "ready"
        assert await asyncio.to_thread(w.scale, "web", 6)
        await assert_settles(c, w, 60)
        on_full = [r["id"] for r in running_replicas(c, "web") if r["node_id"] == c.node_ids[i]]
        assert on_full == [rid], f"new replicas were placed on a node with DiskPressure: {on_full}"
        assert await asyncio.to_thread(w.scale, "web", 0)
        stopped = await timed(
            "its container stopped", lambda: rid not in c.running_containers(), 30
        )
        p = c.agents[i]
        assert p is not None and p.alive(), f"the agent died on a full disk: see {p and p.log}"
    finally:
        c.free_disk(i)
    cleared = await timed(
        "DiskPressure cleared", lambda: not c.node(i)["conditions"]["disk_pressure"], 30
    )
    c.kill_agent(i, signal.SIGTERM)
    await c.start_agent(i)
    await timed("node ready after restart", lambda: c.node_state(i) == "ready", 30)
    assert await asyncio.to_thread(w.scale, "web", 3)
    settle = await assert_settles(c, w, 60)
    report(
        "full-disk",
        disk_pressure_reported_s=seen,
        stop_obeyed_on_full_disk_s=stopped,
        pressure_cleared_s=cleared,
        settle_after_restart_s=settle,
        total_s=time.monotonic() - t0,
    )


async def test_sigterm_restart_keeps_replicas(cluster: NetnsCluster) -> None:
    """SIGTERM an agent (an upgrade, ``systemctl restart``) and start it 3 s later: it says
    goodbye with the default 30 s hold, so the node never goes offline, nothing is replaced,
    and the new process adopts its container (same task)."""
    c = cluster
    w = await _deploy(c)
    i, rid = _victim(c)
    pid_before = _task_pid(c, i, rid)
    c.kill_agent(i, signal.SIGTERM)
    seen = await _watch_states(c, i, 3.0)
    await c.start_agent(i)
    seen |= await _watch_states(c, i, 3.0)
    assert seen == {"ready"}, f"node states around a clean restart: {seen}"
    settle = await assert_settles(c, w, 60)
    assert rid in {r["id"] for r in running_replicas(c, "web")}
    assert _task_pid(c, i, rid) == pid_before, "the restarted agent adopts the same task"
    report("sigterm-restart", states="ready", settle_s=settle, adopted="True")
