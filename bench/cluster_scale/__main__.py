"""``python -m bench.cluster_scale [--nodes 1000,5000] [--quick] [--no-failover]``

Scales one real coordinator (embedded etcd, real processes on loopback) up through the given
node counts with simulated agents in worker processes, measuring at each step: heartbeat cost,
scheduling latency, membership convergence (stream break, kill -9, cut-off), failed-replica
rescheduling and false alarms under random 1-2 s freezes. Then measures coordinator failover on
a three-coordinator cluster. Writes ``bench/results/cluster_scale.json``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import write_results

from .failover import failover
from .scale import ScaleRun
from .swarm import raise_nofile

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def _measure(step: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded in ``step["errors"]`` and the run goes on."""
    try:
        step[key] = fn()
        return step[key]
    except Exception as e:
        step.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"
        log(f"{key} failed: {step['errors'][key]}")
        return None


def measure_step(run: ScaleRun, n: int, quick: bool, step: dict[str, Any]) -> None:
    """Every measurement of one step, in order, each recorded (or its failure)."""
    _measure(step, "heartbeat_cost", lambda: run.heartbeat_cost(8.0 if quick else 20.0))
    names: list[str] = []

    def sched() -> dict[str, Any]:
        out, got = run.scheduling(n, 3 if quick else 5, 10)
        names.extend(got)
        return out

    _measure(step, "scheduling", sched)
    _measure(step, "reschedule", lambda: run.reschedule(names, 2 if quick else 3))
    _measure(step, "kill9", lambda: run.kill9(2))
    _measure(step, "cutoff", lambda: run.cutoff(n, 3 if quick else 5))
    _measure(step, "false_alarms", lambda: run.false_alarms(n, 10.0 if quick else 20.0))
    for name in names:
        _measure(step, "cleanup", lambda: run.client.call("DELETE", f"/v1/workloads/{name}"))  # noqa: B023
    step["coordinator_leadership_lapses_so_far"] = run.term_ends()
    step["agent_stream_drops_so_far"] = run.link_failures()
    step["api_retries_so_far"] = run.client.retries
    step["event_stream_reconnects_so_far"] = run.events.reconnects


def run_scale(nodes: list[int], quick: bool, root: Path) -> dict[str, Any]:
    run = ScaleRun(root, log)
    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"steps": steps}
    try:
        run.start()
        for n in nodes:
            log(f"== step N={n}")
            step: dict[str, Any] = {"nodes": n}
            steps.append(step)
            if steps[:-1] and not run.healthy(60.0):  # no use growing a cluster in a storm
                step["broke"] = (
                    f"not grown: after the N={steps[-2]['nodes']} measurements only "
                    f"{run.ready_count()} of {run.enrolled() - len(run.dead)} nodes were ready"
                )
                log(step["broke"])
                break
            step["grow"] = g = run.grow(n)
            if g["ready"] < n * 0.98:
                step["broke"] = (
                    f"only {g['ready']}/{n} nodes ready after {g['seconds']}s "
                    f"({g['coordinator_leadership_lapses_so_far']} leadership lapses, "
                    f"{g['agent_stream_drops_so_far']} agent stream drops so far)"
                )
                log(step["broke"])
                break
            time.sleep(5.0 if quick else 10.0)  # settle: intervals stretch, enroll bursts end
            measure_step(run, n, quick, step)
    except (Exception, KeyboardInterrupt) as e:  # record where it broke; write what we have
        out["error"] = f"{type(e).__name__}: {e}"
        log(f"scale run failed: {out['error']}")
    finally:
        run.stop()
    return out


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every ``finally`` runs (iptables rules of a cut-off
    # removed, processes stopped, partial results written).
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    raise_nofile()  # 5,000 agent connections; inherited by the coordinator and the workers
    p = argparse.ArgumentParser(prog="python -m bench.cluster_scale")
    p.add_argument(
        "--nodes",
        default="",
        help="comma-separated node counts (default 1000; the full run: 1000,2000,5000)",
    )
    p.add_argument("--quick", action="store_true", help="small and short: N=250, few samples")
    p.add_argument("--no-failover", action="store_true")
    p.add_argument("--no-scale", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    p.add_argument("--failover-kills", type=int, default=0)
    p.add_argument(
        "--failover-only",
        action="store_true",
        help="only the failover run; writes bench/results/cluster_failover.json",
    )
    a = p.parse_args(argv)
    nodes = [int(x) for x in a.nodes.split(",") if x] or ([250] if a.quick else [1000])
    root = Path(
        tempfile.mkdtemp(prefix="cl-scale-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    results: dict[str, Any] = {"command": "python -m bench.cluster_scale " + " ".join(argv)}
    try:
        if not a.no_scale and not a.failover_only:
            results["scale"] = run_scale(nodes, a.quick, root / "scale")
        if not a.no_failover:
            kills = a.failover_kills or (2 if a.quick else 3)
            results["failover"] = failover(root / "failover", kills, agents=20, log=log)
    finally:
        if a.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    write_results("cluster_failover" if a.failover_only else "cluster_scale", results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
