"""``python -m bench.workloads``: what health checks cost the agent.

The agent's real supervisor runs 50 replicas on the fake runtime (containers are free, so
what is measured is the agent's own work), first with no checks, then with every replica
probed every second twice: an exec liveness check (through the runtime seam) and an HTTP
readiness check over a real socket to a child process (``_server.py``) listening on each
replica's host port. CPU is this process's user+system time over the window
(``time.process_time``); the difference between the two runs, divided by the probes run, is
the cost of one probe.

Second part (``rollout.py``): the time from an image change to all of 10 replicas on 3 nodes
rolled and ready, in the simulated cluster (simulated seconds; see there).
On a real 3-node cluster (network namespaces, containerd): ``python -m
bench.workloads.real_rollout`` (needs root; writes its own key of ``workloads.json``).

Not measured here: exec probes on containerd (each is a runc exec, costed by containerd and
the shim, not by the agent).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

from bench.common import write_results
from bench.workloads import rollout
from cloudless.agent.ports import PortAllocator
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.lib.clock import SystemClock
from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.fake import FakeBehavior, FakeRuntime

REPLICAS = 50
SECONDS = float(os.environ.get("BENCH_WORKLOADS_SECONDS", "20"))
WARMUP = 3.0


def free_block(n: int, start: int = 41000) -> int:
    """The first port p >= start with p..p+n-1 all free on 127.0.0.1."""
    base = start
    while base + n < 65000:
        for i in range(n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + i))
                except OSError:
                    base += i + 1
                    break
        else:
            return base
    raise RuntimeError("no block of free ports")


def workload(checked: bool) -> WorkloadSpec:
    health = HealthChecks()
    if checked:
        health = HealthChecks(
            liveness=Probe(ProbeKind.EXEC, command=("true",), interval_s=1.0, timeout_s=1.0),
            readiness=Probe(ProbeKind.HTTP, port=8080, path="/", interval_s=1.0, timeout_s=1.0),
        )
    return WorkloadSpec(name="web", image="web:1", ports=(8080,), health=health)


def served(server: subprocess.Popen[str]) -> int:
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write("?\n")
    server.stdin.flush()
    return int(server.stdout.readline())


async def measure(checked: bool, base: int, server: subprocess.Popen[str]) -> dict[str, Any]:
    clock = SystemClock()
    rt = FakeRuntime(clock, default=FakeBehavior())
    ports = PortAllocator(base, base + REPLICAS, is_free=lambda p: True)
    sup = Supervisor(rt, clock, lambda: None, ports=ports)
    spec = workload(checked)
    initial = [Assigned(f"web-{i}", "web", 1, spec) for i in range(REPLICAS)]
    async with asyncio.TaskGroup() as tg:
        loop_task = tg.create_task(rt.run())
        sup_task = tg.create_task(sup.run(initial))
        await asyncio.sleep(WARMUP)
        ready = sum(w.status.ready for w in sup.workers.values())
        execs0, http0 = rt.host.exec_count, served(server)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(SECONDS)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        execs, http = rt.host.exec_count - execs0, served(server) - http0
        ready_end = sum(w.status.ready for w in sup.workers.values())
        loop_task.cancel()
        sup_task.cancel()
    return {
        "replicas": REPLICAS,
        "checks": "exec liveness + http readiness, 1 s each" if checked else "none",
        "window_s": round(wall, 2),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "exec_probes": execs,
        "http_probes": http,
        "ready_after_warmup": ready,
        "ready_at_end": ready_end,
    }


def main() -> None:
    base = free_block(REPLICAS)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.workloads._server", str(base), str(REPLICAS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        assert server.stdout.readline().strip() == "listening"
        idle = asyncio.run(measure(False, base, server))
        probed = asyncio.run(measure(True, base, server))
        server.stdin.close()
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    probes = probed["exec_probes"] + probed["http_probes"]
    extra = probed["cpu_s"] - idle["cpu_s"]
    load1 = os.getloadavg()[0]
    result = {
        "health_overhead": {
            "without_checks": idle,
            "with_checks": probed,
            "probes_per_s": round(probes / probed["window_s"], 1),
            "extra_cpu_percent_of_one_core": round(
                probed["cpu_percent_of_one_core"] - idle["cpu_percent_of_one_core"], 2
            ),
            "cpu_us_per_probe": round(1e6 * extra / probes, 1) if probes else None,
        },
        "rollout_10_replicas_3_nodes_simulated": asyncio.run(rollout.measure()),
        "load_average_1m": round(load1, 2),
    }
    write_results("workloads", result)
    print(result)


if __name__ == "__main__":
    main()
