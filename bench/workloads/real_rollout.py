"""Roll-out time on a real 3-node cluster: ``python -m bench.workloads.real_rollout``.

One coordinator (real process, embedded etcd) and three agents, each in a network namespace
of its own with its own containerd (``cloudless.devenv.cluster.NetnsCluster``, prefix
``cl15ro``). A workload of 10 busybox replicas with an exec readiness check every second runs;
each round changes its image tag and measures, on the host clock, the time from the apply to
the roll-out being ``complete`` (every replica on the new version, running and ready, as the
coordinator records it). Three update policies, interleaved round by round so they see the same
machine load: in place with the default batch (10 // 4 = 2), in place with
``max_unavailable: 5``, and start first with ``max_surge: 2``. Adds
``rollout_10_replicas_3_nodes_containerd`` to ``bench/results/workloads.json`` (keeping the
rest). Needs root, ip/iptables, containerd, etcd, docker-registry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from cloudless.devenv import build_busybox_image
from cloudless.devenv.cluster import NetnsCluster, wait_until

REPLICAS = 10
POLICIES: dict[str, str] = {
    "in_place_batch_2": "{}",
    "in_place_max_unavailable_5": "{max_unavailable: 5}",
    "start_first_max_surge_2": "{max_surge: 2}",
}


def spec(image: str, update: str) -> bytes:
    return (
        f"name: web\nimage: {image}\n"
        "command: [sh, -c, ': > /tmp/ready; trap \"exit 0\" TERM; while true; do sleep 1; done']\n"
        f"resources: {{cpu: 10m, memory: 8Mi}}\nreplicas: {REPLICAS}\n"
        "restart: {policy: always}\nstop_timeout: 2\n"
        "health:\n  readiness: {exec: 'test -f /tmp/ready', interval: 1s}\n"
        f"update: {update}\n"
    ).encode()


def rollout(c: NetnsCluster) -> dict[str, Any]:
    return dict(c.api.call("GET", "/v1/workloads/web/rollout"))


async def one(c: NetnsCluster, image: str, update: str) -> tuple[float, int]:
    """Apply ``image`` under ``update``; seconds until the roll-out is complete, and its
    version."""
    t0 = time.monotonic()
    res = await asyncio.to_thread(c.api.apply, spec(image, update))
    version = int(res["workload"]["version"])

    def done() -> bool:
        ro = rollout(c)
        if ro["rollout"]["state"] == "failed" or ro["rollout"].get("rollback_of"):
            raise RuntimeError(f"roll-out failed: {ro['rollout']}")
        return bool(ro["version"] == version and ro["rollout"]["state"] == "complete")

    await wait_until(f"version {version} rolled", done, 300, interval=0.05)
    return time.monotonic() - t0, version


async def run(rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {k: [] for k in POLICIES}
    with tempfile.TemporaryDirectory(prefix="cl15ro-") as tmp:
        async with NetnsCluster(Path(tmp), coordinators=1, agents=3, prefix="cl15ro") as c:
            assert c.registry is not None
            tags = [c.image]
            for i in range(rounds * len(POLICIES)):
                tags.append(await build_busybox_image(c.registry, "busybox", f"r{i + 2}"))
            await asyncio.to_thread(c.api.apply, spec(tags[0], "{}"))

            def all_ready() -> bool:
                ro = rollout(c)
                return bool(ro["replicas"]["ready"] == REPLICAS)

            await wait_until("10 ready", all_ready, 180, interval=0.3)
            n = 1
            for r in range(rounds):
                for name, update in POLICIES.items():
                    took, version = await one(c, tags[n], update)
                    n += 1
                    samples[name].append(round(took, 2))
                    print(f"round {r + 1} {name}: version {version} rolled in {took:.2f}s")
    out: dict[str, Any] = {}
    for name, xs in samples.items():
        out[name] = {"samples_s": xs, "median_s": round(statistics.median(xs), 2)}
    base = out["in_place_batch_2"]["median_s"]
    for name in out:
        out[name]["ratio_to_in_place_batch_2"] = round(out[name]["median_s"] / base, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workloads.real_rollout", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    load0 = os.getloadavg()[0]
    res = asyncio.run(run(args.rounds))
    path = RESULTS / "workloads.json"
    doc = json.loads(path.read_text()) if path.exists() else {"suite": "workloads"}
    doc["rollout_10_replicas_3_nodes_containerd"] = {
        "command": f"python -m bench.workloads.real_rollout --rounds {args.rounds}",
        "setup": "1 coordinator + embedded etcd, 3 agents each in a netns with its own "
        "containerd; 10 busybox replicas, exec readiness check every 1 s; image tag change "
        "-> roll-out complete (coordinator's record), host clock",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m_before": round(load0, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        **res,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
