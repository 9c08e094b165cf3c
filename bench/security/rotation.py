"""``python -m bench.security.rotation [--nodes 100,300] [--root-bits 4096]``

Root rotation time on a live cluster: one real coordinator (in-memory store; real mutual-TLS
gRPC and HTTPS on loopback) and N simulated agents in a worker process
(``bench.cluster_scale.swarm``: real ``Agent`` objects, real enrollment, streams and
heartbeats, the fake runtime). For each N: start ``POST /v1/ca/rotate`` with no overlap and
time each phase until ``done``; count agent sessions re-opened during the rotation (goal 0),
and, for contrast, during a quiet window of the same order before it (a loaded machine drops
streams on its own). The figures are merged into ``bench/results/policy.json`` under
``ca_rotation`` beside the policy evaluation times (issue 18 names that file; the other
figures there are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_results
from cloudless.cli.client import Client, ClientConfig
from cloudless.coordinator.wiring.config import CoordinatorConfig
from cloudless.coordinator.wiring.process import Coordinator
from cloudless.lib.net import free_port


async def _until(pred: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(every)


async def one_size(n: int, root_bits: int, tmp: Path, baseline_s: float) -> dict[str, Any]:
    cfg = CoordinatorConfig(
        data_dir=tmp / "coord",
        store="memory",
        bootstrap=True,
        api_port=free_port(),
        agent_port=free_port(),
        enroll_port=free_port(),
        root_key_size=root_bits,
        bcrypt_cost=4,
    )
    coord = Coordinator(cfg)
    task = asyncio.create_task(coord.run())
    worker: asyncio.subprocess.Process | None = None
    try:
        await asyncio.wait_for(coord.ready.wait(), 60)
        client = Client(ClientConfig.load(tmp / "coord" / "admin" / "config.json"))
        tokens = [await asyncio.to_thread(client.create_token) for _ in range(n)]
        (tmp / "tokens").write_text("\n".join(tokens) + "\n")
        worker = await asyncio.create_subprocess_exec(
            *[
                sys.executable,
                "-m",
                "bench.cluster_scale.swarm",
                "--api",
                cfg.api_url,
                "--tokens",
                str(tmp / "tokens"),
                "--first",
                "0",
                "--count",
                str(n),
                "--data",
                str(tmp / "agents"),
            ],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        t_enrol = time.monotonic()
        await _until(
            lambda: len(coord.agents.dispatcher.sessions) >= n, 600, f"{n} agent sessions", 0.5
        )
        enrol_s = time.monotonic() - t_enrol
        interval = cfg.membership.interval_for(n)
        await asyncio.sleep(2 * interval)  # every agent has reported its trust once
        # baseline: sessions re-opened in a quiet window as long as a rotation takes, to tell
        # a loaded machine's churn from the rotation's
        quiet = dict(coord.agents.dispatcher.sessions)
        await asyncio.sleep(baseline_s)
        churn = sum(coord.agents.dispatcher.sessions.get(k) is not s for k, s in quiet.items())
        sessions = dict(coord.agents.dispatcher.sessions)

        t0 = time.monotonic()
        rot = await asyncio.to_thread(client.call, "POST", "/v1/ca/rotate", {"overlap_s": 0})
        start_s = time.monotonic() - t0
        phases: dict[str, float] = {"trust": start_s}
        while True:
            cur = await coord.rotation.current()
            assert cur is not None and cur.id == rot["id"]
            if cur.phase not in phases:
                phases[cur.phase] = time.monotonic() - t0
            if cur.phase == "done":
                break
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"rotation stuck at {cur.phase}: {cur.waiting}")
            await asyncio.sleep(0.05)
        total = time.monotonic() - t0
        reopened = sum(
            coord.agents.dispatcher.sessions.get(k) is not s for k, s in sessions.items()
        )
        return {
            "nodes": n,
            "root_bits": root_bits,
            "heartbeat_interval_s": interval,
            "enrolment_of_all_s": round(enrol_s, 2),
            "rotation_total_s": round(total, 2),
            "phase_reached_at_s": {k: round(v, 2) for k, v in phases.items()},
            "start_request_s": round(start_s, 3),
            "sessions_reopened": reopened,
            "sessions_reopened_in_quiet_window": churn,
            "quiet_window_s": baseline_s,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        }
    finally:
        if worker is not None:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="100,300")
    p.add_argument("--root-bits", type=int, default=4096)
    p.add_argument("--quiet-window", type=float, default=20.0)
    a = p.parse_args()
    runs = []
    for n in (int(x) for x in a.nodes.split(",")):
        with tempfile.TemporaryDirectory(prefix="cl18-rot-") as d:
            r = asyncio.run(one_size(n, a.root_bits, Path(d), a.quiet_window))
        print(json.dumps(r), flush=True)
        runs.append(r)
    path = RESULTS / "policy.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    for k in ("suite", "when", "machine"):
        existing.pop(k, None)
    existing["ca_rotation"] = {"load_average_1m_at_start": os.getloadavg()[0], "runs": runs}
    write_results("policy", existing)


if __name__ == "__main__":
    main()
