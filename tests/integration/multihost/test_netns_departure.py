"""A planned departure across network namespaces, all real processes: one coordinator (with
its etcd member) and two agents, each in its own namespace with its own containerd.

``cloudless agent leave`` on the agent holding the replica: the replacement's container is
running (and its replica ready) on the other agent before the leaving agent stops its own.
Measured from both sides, every 50 ms during the whole leave: the replicas the API calls
ready, and the RUNNING containerd tasks of the workload over both hosts; neither drops to
zero. Then the agent has exited 0 and its node is departed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cloudless.devenv.cluster import NetnsCluster, unavailable_reason, wait_until

SKIP = unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(SKIP), reason=SKIP or "")]

SPEC = (
    "name: web\nimage: {image}\n"
    "command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
    "resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: 1\n"
)


def ready(c: NetnsCluster) -> list[dict[str, Any]]:
    reps = c.api.workload("web")["replicas"]
    return [r for r in reps if r["desired"] == "running" and r["ready"]]


@pytest.mark.timeout(300)
async def test_agent_leave_across_namespaces_keeps_a_replica_running(tmp_path: Path) -> None:
    async with NetnsCluster(
        tmp_path, coordinators=1, agents=2, prefix="cl19", namespace="cl19"
    ) as c:
        c.api.apply(SPEC.format(image=c.image).encode())
        await wait_until("web ready", lambda: len(ready(c)) == 1, 90)
        [old] = ready(c)
        i = c.node_ids.index(old["node_id"])
        leaving = c.agents[i]
        assert leaving is not None

        samples: list[tuple[float, int, int]] = []  # (time, ready replicas, running tasks)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                n_ready = len(ready(c))
                tasks = sum(v for k, v in c.running_containers().items() if k.startswith("web-"))
                samples.append((time.monotonic(), n_ready, tasks))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            t0 = time.monotonic()
            left = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "cloudless", "agent", "leave",
                 "--data-dir", str(c.agent_dir(i)), "--deadline", "90s", "--reason", "netns test"],
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            took = time.monotonic() - t0
            assert left.returncode == 0, left.stdout + left.stderr
            leaving.reap()
            await wait_until("departed", lambda: c.node_state(i) == "departed", 20)
            await asyncio.sleep(0.5)
        finally:
            done.set()
            await asyncio.to_thread(sampler.join)

        log = leaving.log.read_text(errors="replace")
        assert "left the cluster" in log and "Traceback" not in log
        assert leaving.popen.returncode == 0
        assert samples and min(s[1] for s in samples) >= 1, samples  # never without ready
        assert min(s[2] for s in samples) >= 1, samples  # never without a running container
        [new] = ready(c)
        assert new["node_id"] == c.node_ids[1 - i]
        assert c.tasks(1 - i).get(new["id"]) == "RUNNING"
        assert c.tasks(i).get(old["id"]) != "RUNNING"  # the old one was stopped
        print(
            f"\nleave took {took:.1f}s; {len(samples)} samples, min ready "
            f"{min(s[1] for s in samples)}, min running tasks {min(s[2] for s in samples)}"
        )
