"""Membership and rescheduling on a real cluster, repeated: ``python -m bench.netns_churn``.

One coordinator (real process, embedded etcd) and four agents, each agent in a network
namespace of its own with its own containerd (``cloudless.devenv.cluster.NetnsCluster``),
busybox replicas spread over three zones. Each round picks an agent holding a running replica
and either kills it with SIGKILL or cuts its host off (iptables DROP on its ``eth0``: no FIN,
nothing crosses), then measures, from the coordinator's event stream (same host clock):

* fault -> the node's ``offline`` event (membership convergence; goal 2 s P50 / 4 s P95);
* fault -> a replacement replica of the workload placed elsewhere and reported ``running``
  by its agent through real containerd (rescheduling; goal 2.5 s P50 / 5 s P95).

Then the agent is restarted (or the link healed) and the round waits until the cluster is
back to three running replicas with no duplicate containers before the next fault. Writes
``bench/results/netns_churn.json``. Needs root, ip/iptables, containerd, etcd,
docker-registry (the same as ``make test-chaos``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster_scale.cluster import EventFollower
from bench.cluster_scale.measure import first_after, summary
from bench.cluster_scale.scale import replacement_running
from bench.common import write_results
from cloudless.devenv.cluster import NetnsCluster, wait_until

GOALS = {"offline": (2.0, 4.0), "replaced": (2.5, 5.0)}


def spec(image: str, replicas: int) -> bytes:
    return (
        f"name: web\nimage: {image}\n"
        "command: [sh, -c, 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
        f"resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: {replicas}\n"
        "restart: {policy: always}\n"
        "placement:\n  max_per_node: 1\n"
    ).encode()


def running(c: NetnsCluster) -> list[dict[str, Any]]:
    reps = c.api.workload("web")["replicas"]
    return [r for r in reps if r["desired"] == "running" and r["observed"] == "running"]


def node_ready(c: NetnsCluster, i: int) -> bool:
    return c.node_state(i) == "ready"


def settled(c: NetnsCluster, want: int) -> bool:
    counts = c.running_containers()
    return len(running(c)) == want and sum(counts.values()) == want and max(counts.values()) == 1


async def churn(rounds: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    want = 3
    samples: dict[str, list[float]] = {
        "kill_offline": [],
        "kill_replaced": [],
        "cut_offline": [],
        "cut_replaced": [],
    }
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cl-churn-") as tmp:
        async with NetnsCluster(Path(tmp), coordinators=1, agents=4, prefix="clchurn") as c:
            follower = EventFollower(c.api)
            await asyncio.to_thread(c.api.apply, spec(c.image, want))
            await wait_until("3 running", lambda: settled(c, want), 90, interval=0.3)
            for r in range(rounds):
                for fault in ("kill", "cut"):
                    await asyncio.sleep(rng.uniform(0.5, 2.0))  # a random heartbeat phase
                    victim = rng.choice(running(c))
                    i = c.node_ids.index(victim["node_id"])
                    node = c.node_ids[i]
                    t0 = time.time()
                    if fault == "kill":
                        c.kill_agent(i)
                    else:
                        c.cut(i)
                    try:
                        off = await asyncio.to_thread(
                            follower.wait,
                            lambda evs, node=node, t0=t0: first_after(
                                evs, t0, kind="node", node=node, state="offline"
                            ),
                            20,
                        )
                        rep = await asyncio.to_thread(
                            follower.wait,
                            replacement_running("web", node, t0),
                            30,
                        )
                    finally:
                        if fault == "kill":
                            await c.start_agent(i)
                        else:
                            c.heal(i)
                    o = off.at - t0 if off else float("nan")
                    p = rep.at - t0 if rep else float("nan")
                    samples[f"{fault}_offline"].append(o)
                    samples[f"{fault}_replaced"].append(p)
                    line = f"round {r + 1} {fault} {node}: offline +{o:.2f}s, replaced +{p:.2f}s"
                    log.append(line)
                    print(line, flush=True)
                    back = functools.partial(node_ready, c, i)
                    await wait_until("node back", back, 40, interval=0.2)
                    await wait_until("settled", lambda: settled(c, want), 60, interval=0.3)
    out: dict[str, Any] = {"rounds": rounds, "log": log}
    for k, v in samples.items():
        out[k] = {"samples": [round(x, 3) for x in v], **summary(v, *GOALS[k.split("_")[1]])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.netns_churn", description=__doc__)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    res = asyncio.run(churn(args.rounds, args.seed))
    write_results(
        "netns_churn",
        {
            "command": "python -m bench.netns_churn " + " ".join(argv or sys.argv[1:]),
            "setup": "1 coordinator + etcd, 4 agents each in a netns with its own containerd",
            "goals_s": GOALS,
            **res,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
