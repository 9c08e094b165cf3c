"""``python -m bench.scheduler``: writes bench/results/scheduler.json.

- decision latency for one replica at 1k..20k nodes (P50/P95), and its growth;
- batch throughput: 10,000 mixed replicas onto 5,000 nodes, per strategy;
- peak memory of building a 20k-node snapshot (tracemalloc);
- the plain-Python reference on the same inputs: same placements, and the speed-up;
- packing quality against an exact ILP, and spread evenness;
- mixed fleets (phones, laptops, servers, VPS): packers' device count over the optimum;
- constrained plans up to 50 nodes: replicas left unplaced although a full placement exists.
"""

from __future__ import annotations

import gc
import random
import sys
import time
import tracemalloc
from typing import Any

from bench.common import percentile, write_results
from bench.scheduler.constrained import constrained_quality
from bench.scheduler.mixed import mixed_packing
from bench.scheduler.quality import packing_quality, spread_quality
from cloudless.model.node import Node
from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Scheduler, Snapshot, Strategy
from cloudless.scheduler.reference import ReferenceScheduler
from cloudless.scheduler.testing import generate_cluster, generate_workloads

SIZES = (1000, 2000, 5000, 10000, 20000)


def loaded(n: int) -> tuple[list[Node], list[Replica], dict[str, WorkloadSpec], list[WorkloadSpec]]:
    """``n`` generated nodes carrying about n/2 replicas of 50 workloads (so utilization,
    spread and per-node limits have something to see)."""
    nodes = generate_cluster(n, seed=n)
    wls = generate_workloads(50, seed=7)
    plan = Scheduler(rng=random.Random(1)).schedule_many(
        Snapshot.build(nodes), [(w, max(1, n // 100)) for w in wls]
    )
    reps = [Replica(f"{a.workload}-{a.index}", a.workload, a.node_id) for a in plan.assignments]
    return nodes, reps, {w.name: w for w in wls}, wls


def latency(snap: Snapshot, wls: list[WorkloadSpec], decisions: int) -> dict[str, float]:
    s = Scheduler(rng=random.Random(3))
    for w in wls[:5]:
        s.place(snap, w, 1)  # warm-up
    samples = []
    for i in range(decisions):
        w = wls[i % len(wls)]
        t = time.perf_counter()
        s.place(snap, w, 1)
        samples.append((time.perf_counter() - t) * 1000)
    return {
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "mean_ms": sum(samples) / len(samples),
        "decisions": decisions,
    }


def batch(snap: Snapshot, wls: list[WorkloadSpec], strategy: Strategy) -> dict[str, Any]:
    groups = [(w, 200) for w in wls]  # 50 workloads x 200 = 10,000 replicas
    best = None
    runs = []
    for _ in range(3):
        gc.collect()
        t = time.perf_counter()
        plan = Scheduler(rng=random.Random(5)).schedule_many(snap, groups, strategy=strategy)
        dt = time.perf_counter() - t
        runs.append(dt)
        best = plan
    assert best is not None
    placed = len(best.assignments)
    med = sorted(runs)[1]
    return {
        "replicas": sum(c for _, c in groups),
        "placed": placed,
        "unplaced": sum(u.count for u in best.unplaced),
        "seconds_median_of_3": med,
        "placements_per_s": placed / med,
    }


def reference_compare(
    nodes: list[Node], reps: list[Replica], specs: dict[str, WorkloadSpec], wls: list[WorkloadSpec]
) -> dict[str, Any]:
    snap = Snapshot.build(nodes, reps, specs)
    same = True
    fast = slow = 0.0
    decisions = 20
    for i in range(decisions):
        w = wls[i % len(wls)]
        t = time.perf_counter()
        a = Scheduler(rng=random.Random(i)).place(snap, w, 1)
        fast += time.perf_counter() - t
        t = time.perf_counter()
        b = ReferenceScheduler(rng=random.Random(i)).place(nodes, reps, specs, w, 1)
        slow += time.perf_counter() - t
        same = same and a == b
    # a small batch through both
    sub = nodes[:1000]
    sub_ids = {x.id for x in sub}
    sub_reps = [r for r in reps if r.node_id in sub_ids]
    groups = [(w, 8) for w in wls[:25]]
    t = time.perf_counter()
    pa = Scheduler(rng=random.Random(9)).schedule_many(Snapshot.build(sub, sub_reps, specs), groups)
    bf = time.perf_counter() - t
    t = time.perf_counter()
    pb = ReferenceScheduler(rng=random.Random(9)).schedule_many(sub, sub_reps, specs, groups)
    bs = time.perf_counter() - t
    return {
        "single_decision_5000_nodes": {
            "decisions": decisions,
            "vectorized_ms_mean": fast / decisions * 1000,
            "reference_ms_mean": slow / decisions * 1000,
            "speedup": slow / fast,
            "same_plans": same,
        },
        "batch_200_replicas_1000_nodes": {
            "vectorized_s": bf,
            "reference_s": bs,
            "speedup": bs / bf,
            "same_plans": pa == pb,
        },
    }


def snapshot_memory(n: int) -> dict[str, Any]:
    nodes, reps, specs, _ = loaded(n)
    gc.collect()
    tracemalloc.start()
    snap = Snapshot.build(nodes, reps, specs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "nodes": n,
        "replicas": len(reps),
        "peak_build_mb": peak / 2**20,
        "column_arrays_mb": snap.nbytes() / 2**20,
        "target_mb": 100,
    }


def main() -> int:
    out: dict[str, Any] = {"command": "python -m bench.scheduler"}
    curve = {}
    data = {}
    for n in SIZES:
        nodes, reps, specs, wls = loaded(n)
        data[n] = (nodes, reps, specs, wls)
        snap = Snapshot.build(nodes, reps, specs)
        curve[str(n)] = latency(snap, wls, 400 if n <= 5000 else 200)
        print(f"latency {n}: {curve[str(n)]}", flush=True)
    out["single_decision_latency"] = curve
    out["single_decision_5000"] = {
        **curve["5000"],
        "target_p50_ms": 2.0,
        "target_p95_ms": 5.0,
    }
    lo, hi = curve["1000"]["p50_ms"], curve["20000"]["p50_ms"]
    out["latency_growth"] = {
        "p50_20k_over_1k": hi / lo,
        "nodes_ratio": 20,
        "no_worse_than_linear": hi / lo <= 20,
    }
    nodes, reps, specs, wls = data[5000]
    empty = Snapshot.build(nodes)
    out["batch_10000_onto_5000"] = {
        s.value: batch(empty, wls, s)
        for s in (Strategy.SCORE, Strategy.FIRST_FIT, Strategy.BEST_FIT)
    }
    out["batch_10000_onto_5000"]["target_placements_per_s"] = 5000
    print(f"batch: {out['batch_10000_onto_5000']}", flush=True)
    out["memory_20000_nodes"] = snapshot_memory(20000)
    print(f"memory: {out['memory_20000_nodes']}", flush=True)
    out["reference"] = reference_compare(nodes, reps, specs, wls)
    print(f"reference: {out['reference']}", flush=True)
    out["packing_quality"] = packing_quality(200)
    print(f"quality: {out['packing_quality']}", flush=True)
    out["spread_quality"] = spread_quality(200)
    print(f"spread: {out['spread_quality']}", flush=True)
    out["mixed_fleet_packing"] = mixed_packing(100)
    print(f"mixed fleet: {out['mixed_fleet_packing']}", flush=True)
    out["constrained_plans"] = constrained_quality(200)
    print(f"constrained: {out['constrained_plans']}", flush=True)
    write_results("scheduler", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
