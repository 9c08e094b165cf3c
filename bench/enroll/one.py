"""One measurement: a fresh real coordinator, ``n`` enrollments at ``concurrency``.

``python -m bench.enroll.one --n 300 --concurrency 16`` (run with the repo root as the working
directory: the coordinator and the client both use *that* tree's code) prints one JSON line.

The coordinator is the real process (``--bootstrap --store etcd``, RSA-2048 root, bcrypt cost
4, as ``bench.cluster_scale`` starts it). The client is this process: each enrollment is the
real ``cloudless.agent.identity.enroll`` (``GET /v1/ca``, pin check, fresh EC key and CSR,
gRPC ``Enroll``), timed from the call to its return.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster_scale.cluster import CoordinatorProc, admin_client, make_tokens, proc_cpu
from bench.common import percentile
from cloudless.agent import identity
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb


def facts(i: int) -> pb.NodeFacts:
    return pb.NodeFacts(
        hostname=f"bench-{i}",
        arch="amd64",
        os="linux",
        cpu_cores=4,
        device_class="server",
        labels={"bench": "enroll"},
        region="local",
        zone=f"zone-{'abc'[i % 3]}",
    )


async def enroll_all(api: str, tokens: list[str], concurrency: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int, token: str) -> None:
        async with sem:
            t0 = time.monotonic()
            try:
                await identity.enroll(api, token, node_name=f"bench-{i}", facts=facts(i))
            except Exception as e:  # counted and reported, never hidden
                errors.append(f"{type(e).__name__}: {e}"[:300])
                return
            latencies.append(time.monotonic() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    wall = time.monotonic() - t0
    return {
        "enrolled": len(latencies),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:5],
        "wall_s": round(wall, 3),
        "enrollments_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-enroll-") as tmp:
        coord = CoordinatorProc("c1", Path(tmp) / "c1")
        coord.data.mkdir(parents=True)
        coord.start(bootstrap=True)
        try:
            client = admin_client(coord, timeout=90)
            path = Path(tmp) / "tokens.txt"
            make_tokens(client, a.n, path)
            tokens = path.read_text().split()
            cpu0 = proc_cpu(coord.pid)
            result = asyncio.run(enroll_all(coord.api, tokens, a.concurrency))
            result["coordinator_cpu_s"] = round(proc_cpu(coord.pid) - cpu0, 2)
            nodes = client.call("GET", "/v1/nodes")
            result["nodes_listed"] = len(nodes["nodes"]) if isinstance(nodes, dict) else len(nodes)
        finally:
            coord.stop()
    result.update(n=a.n, concurrency=a.concurrency, code=identity.__file__)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
