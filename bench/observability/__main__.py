"""What observability costs, side by side in one run.

1. **Scrape at 1,000 and 5,000 nodes**: the coordinator's ``/metrics`` page (cluster gauges
   read from the store, then rendered) over a memory store holding N ready nodes in 3 zones
   and N/2 running replicas of N/100 workloads, 1,500 node records rewritten between two
   scrapes (usage refreshes at 100 nodes/s for a 15 s scrape interval): time per scrape
   (P50/P95 of 10; the first decodes every record) and size.
2. **Coordinator CPU, instruments on vs off, at 1,000 simulated nodes**: the simulation
   harness (real hub, membership, reconciler, placer on the memory store, 1,000 simulated
   agents heartbeating every 2 s) runs 60 simulated seconds per block; a block with the real
   Prometheus instruments alternates with one where every instrument in the product modules
   is replaced by a no-op, 3 blocks each; process CPU seconds per block are compared.
3. **Tracing on vs off per apply**: the spans one apply creates on the coordinator
   (``apply``, ``validate``, ``commit``, and ``schedule`` for 3 replicas) with the no-op
   tracer against a recording tracer with an in-memory exporter, 2,000 each, alternating.

4. **Console**: first contentful paint of the overview in headless Chromium, and the time
   from a node cordoned through the API to its event shown in the page's feed.

Run: ``python -m bench.observability`` -> ``bench/results/observability.json``. ``--quick``:
fewer repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from bench.common import percentile, write_results
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.telemetry import CoordinatorTelemetry
from cloudless.lib.clock import SystemClock
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.observability import tracing
from cloudless.observability.metrics import exposition
from cloudless.store.memory import MemoryStore


async def scrape(n: int, reps: int) -> dict[str, Any]:
    store = MemoryStore(SystemClock())
    st = ClusterState(store)
    for i in range(n):
        node = Node.make(
            f"node-{i:05d}",
            name=f"node{i}",
            zone="abc"[i % 3],
            state=NodeState.READY,
            allocatable=Resources(4000, 8 << 30),
            usage=Resources(1000, 2 << 30),
        )
        await st.nodes.put(node.id, node)
    for w in range(max(1, n // 100)):
        spec = WorkloadSpec(name=f"w{w}", image="busybox:latest", replicas=50)
        await st.workloads.put(spec.name, WorkloadRecord(spec=spec))
        for k in range(50):
            r = Replica(
                id=f"w{w}-{k}",
                workload=spec.name,
                node_id=f"node-{(w * 50 + k) % n:05d}",
                observed=ReplicaState.RUNNING,
            )
            await st.replicas.put(st.replica_key(r), r)
    tele = CoordinatorTelemetry(st, {})
    times, size = [], 0
    churn = min(n, 1500)  # usage refreshes between two scrapes: 100 nodes/s for 15 s
    for rep in range(reps):
        for i in range(churn):
            j = (rep * churn + i) % n
            node = Node.make(
                f"node-{j:05d}",
                name=f"node{j}",
                zone="abc"[j % 3],
                state=NodeState.READY,
                allocatable=Resources(4000, 8 << 30),
                usage=Resources(1000 + rep, 2 << 30),
            )
            await st.nodes.put(node.id, node)
        t0 = time.perf_counter()
        await tele.refresh()
        body, _ = exposition(tele.registry)
        times.append(time.perf_counter() - t0)
        size = len(body)
    return {
        "nodes": n,
        "scrape_p50_s": percentile(times, 50),
        "scrape_p95_s": percentile(times, 95),
        "node_writes_between_scrapes": churn,
        "bytes": size,
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
    }


class _Noop:
    def labels(self, *a: Any, **k: Any) -> _Noop:
        return self

    def inc(self, *a: Any) -> None: ...
    def observe(self, *a: Any) -> None: ...
    def set(self, *a: Any) -> None: ...


def _instrumented_modules() -> list[Any]:
    from cloudless.agent import supervisor
    from cloudless.coordinator.agentapi import service as agent_api
    from cloudless.coordinator.deciders import placer
    from cloudless.coordinator.dispatcher import hub
    from cloudless.coordinator.loops import reconcile_loop as reconciler
    from cloudless.coordinator.wiring import process as server
    from cloudless.observability import store

    return [supervisor, agent_api, hub, placer, reconciler, server, store]


def instruments(on: bool, saved: dict[tuple[Any, str], Any]) -> None:
    """Swap every Prometheus instrument the product modules imported for a no-op (off),
    or put the real ones back (on)."""
    for mod in _instrumented_modules():
        for name in dir(mod):
            key = (mod, name)
            if on and key in saved:
                setattr(mod, name, saved[key])
            elif not on and isinstance(getattr(mod, name), MetricWrapperBase):
                saved[key] = getattr(mod, name)
                setattr(mod, name, _Noop())


async def sim_block(nodes: int, seconds: float) -> float:
    from cloudless.testing.sim.cluster import SimCluster

    async with SimCluster(exact=False, step_s=0.1) as sim:
        await sim.add_agents(nodes)
        await sim.run_for(5)
        await sim.apply(WorkloadSpec(name="web", image="busybox:latest", replicas=nodes // 2))
        c0 = time.process_time()
        await sim.run_for(seconds)
        return time.process_time() - c0


async def sim_cpu(nodes: int, seconds: float, blocks: int) -> dict[str, Any]:
    saved: dict[tuple[Any, str], Any] = {}
    on: list[float] = []
    off: list[float] = []
    for b in range(blocks * 2):
        measure_on = b % 2 == 0
        instruments(measure_on, saved)
        (on if measure_on else off).append(await sim_block(nodes, seconds))
        print(
            f"  block {b}: instruments {'on' if measure_on else 'off'}: "
            f"{(on if measure_on else off)[-1]:.2f} s CPU",
            flush=True,
        )
    instruments(True, saved)
    return {
        "nodes": nodes,
        "simulated_s_per_block": seconds,
        "cpu_s_on": on,
        "cpu_s_off": off,
        "ratio_on_over_off": sum(on) / sum(off),
    }


def apply_spans(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        tr = tracing.tracer()
        with tr.start_as_current_span("apply") as span:
            with tr.start_as_current_span("validate"):
                pass
            tp = tracing.traceparent(span)
            with tr.start_as_current_span("commit"):
                pass
        for _r in range(3):
            with tracing.child_of(tp), tr.start_as_current_span("schedule") as s:
                tracing.traceparent(s)
    return (time.perf_counter() - t0) / n


def tracing_cost(n: int, blocks: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    off: list[float] = []
    on: list[float] = []
    for _ in range(blocks):
        tracing.stop()
        off.append(apply_spans(n))
        exp = InMemorySpanExporter()
        tracing.setup("", "bench", exporter=exp, batch=True)
        on.append(apply_spans(n))
        tracing.stop()
    return {
        "applies_per_block": n,
        "us_per_apply_off": 1e6 * percentile(off, 50),
        "us_per_apply_on": 1e6 * percentile(on, 50),
    }


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.observability")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    reps = 3 if args.quick else 10
    out: dict[str, Any] = {"scrape": []}
    for n in (1000, 5000):
        r = await scrape(n, reps)
        print(f"scrape at {n} nodes: {r}", flush=True)
        out["scrape"].append(r)
    out["tracing"] = tracing_cost(500 if args.quick else 2000, 3)
    print(f"tracing: {out['tracing']}", flush=True)
    from bench.observability.console import console_timings

    out["console"] = await console_timings(5 if args.quick else 20)
    print(f"console: {out['console']}", flush=True)
    out["instruments_cpu"] = await sim_cpu(
        1000 if not args.quick else 300, 20 if args.quick else 60, 1 if args.quick else 3
    )
    print(f"instruments: {out['instruments_cpu']}", flush=True)
    write_results("observability", out)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
