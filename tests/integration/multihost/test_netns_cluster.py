"""Multi-host: three coordinators (each with its etcd member) and four agents (each with its
own containerd), every one in its own network namespace, all real processes.

One cluster, three acts: kill -9 the leader coordinator's host and scheduling resumes on the
new leader; cut an agent off with iptables and its replica is replaced, and after healing no
duplicate remains; kill -9 an agent process and restart it, and it adopts its running
container (same task) instead of starting another. The chaos suite (tests/chaos/cluster)
runs each fault on its own, with timings."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cloudless.devenv.cluster import NetnsCluster, unavailable_reason, wait_until

SKIP = unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(SKIP), reason=SKIP or "")]


def spec(name: str, image: str, replicas: int) -> bytes:
    return (
        f"name: {name}\nimage: {image}\n"
        "command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
        f"resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: {replicas}\n"
        "placement:\n  spread:\n    - topology_key: zone\n"
    ).encode()


def running(c: NetnsCluster, workload: str) -> list[dict]:  # type: ignore[type-arg]
    reps = c.api.workload(workload)["replicas"]
    return [r for r in reps if r["observed"] == "running" and r["desired"] == "running"]


def no_duplicates(c: NetnsCluster, workload: str, want: int) -> bool:
    """Exactly ``want`` containers of ``workload`` run over all hosts, one per replica."""
    counts = c.running_containers()
    mine = {k: v for k, v in counts.items() if k.startswith(f"{workload}-")}
    return len(mine) == want and all(v == 1 for v in mine.values())


@pytest.mark.timeout(420)
async def test_three_coordinators_four_agents(tmp_path: Path) -> None:
    async with NetnsCluster(
        tmp_path, coordinators=3, agents=4, prefix="clmh", namespace="clmh"
    ) as c:
        c.api.apply(spec("web", c.image, 3))
        await wait_until("3 running", lambda: len(running(c, "web")) == 3, 60)

        # 1. kill -9 the leader coordinator (its whole host: coordinator + etcd member)
        leader = c.leader()
        assert leader is not None
        c.kill_coordinator(leader)
        new = await wait_until("a new leader", c.leader, 30)
        assert new != leader
        await wait_until("apply accepted", lambda: c.api.apply(spec("api", c.image, 2)), 30)
        await wait_until("scheduling resumed", lambda: len(running(c, "api")) == 2, 60)

        # 2. cut an agent holding a replica of web off, then heal
        victim = running(c, "web")[0]
        i = c.node_ids.index(victim["node_id"])
        c.cut(i)
        try:
            await wait_until("offline", lambda: c.node_state(i) == "offline", 15)
            await wait_until(
                "replaced elsewhere",
                lambda: len([r for r in running(c, "web") if r["node_id"] != c.node_ids[i]]) == 3,
                30,
            )
            assert c.tasks(i).get(victim["id"]) == "RUNNING"  # an island keeps running
        finally:
            c.heal(i)
        await wait_until("ready again", lambda: c.node_state(i) == "ready", 40)
        await wait_until("no duplicates after healing", lambda: no_duplicates(c, "web", 3), 60)

        # 3. kill -9 an agent process (containers live on) and restart it at once: the new
        #    process adopts the running container instead of starting another. A kill -9 is
        #    a death to the coordinator (offline 0.5 s after the stream ends, well before a
        #    new process is up), so a replacement may have been placed meanwhile; then
        #    exactly one of the two survives.
        r = running(c, "web")[0]
        j = c.node_ids.index(r["node_id"])
        before = c.tasks(j)
        assert before.get(r["id"]) == "RUNNING"
        c.kill_agent(j, signal.SIGKILL)
        proc = await c.start_agent(j)
        await wait_until(
            "the restarted agent adopted its container",
            lambda: f"adopted container {r['id']}" in proc.log.read_text(errors="replace"),
            30,
        )
        await wait_until("ready again", lambda: c.node_state(j) == "ready", 30)
        await wait_until("steady", lambda: no_duplicates(c, "web", 3), 60)
        kept = r["id"] in {x["id"] for x in running(c, "web")}
        assert kept == (c.tasks(j).get(r["id"]) == "RUNNING")  # kept only as the adopted task
