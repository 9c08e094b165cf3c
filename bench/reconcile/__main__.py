"""Scheduling latency through the real reconciler on one real etcd: the live view against the
old path (every round lists and decodes nodes, workloads and replicas), side by side.

For N = 1,000 and 5,000 ready node records plus N/2 running replicas of N/100 settled
workloads, a real ``Reconciler`` with the real ``SchedulerPlacer`` leads (no election: the
fence is empty) while usage refreshes are written in the background, as the hub does
(``--usage-rate`` node writes per second). Workloads of 10 replicas are then applied one
after another, each once the previous one's replicas are all committed; a watcher on another
client timestamps each replica record's creation. Reported per replica: time from the
workload write to its record committed (P50/P95); per round that placed something: its
duration and the part spent getting the snapshot; and the duration of rounds that found
nothing to do (a settled cluster). Modes alternate in blocks so machine noise hits both.

Run from the repo root: ``python -m bench.reconcile`` -> ``bench/results/reconcile.json``.
``--quick`` runs N = 1,000 only with fewer workloads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import percentile, write_results
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.deciders.reconcile import Action
from cloudless.coordinator.loops.reconcile_loop import Reconciler
from cloudless.coordinator.state.cluster import ClusterState, Snapshot
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import SystemClock
from cloudless.lib.ids import RandomIds
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.fence import NO_FENCE, Fence
from cloudless.store.tables import ROOT
from cloudless.store.types import Delete, EventType
from cloudless.testing.etcd import SupervisedCluster, TestPki

NODE = Resources(4000, 8 << 30, 100 << 30, 10**9)
SMALL = Resources(100, 64 << 20)
DEBOUNCE_S = [0.02]  # --debounce-ms
BENCH_PREFIX = "bw-"  # workloads applied during measurement (deleted after each block)


class TimedReconciler(Reconciler):
    """The real reconciler, recording how long each round and its snapshot take."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.round_s: list[float] = []
        self.idle_round_s: list[float] = []  # rounds that found nothing to do
        self.snapshot_s: list[float] = []

    async def snapshot(self) -> Snapshot:
        t = time.perf_counter()
        try:
            return await super().snapshot()
        finally:
            self.snapshot_s.append(time.perf_counter() - t)

    async def round(self, fence: Fence) -> list[Action]:
        t = time.perf_counter()
        actions = await super().round(fence)
        (self.round_s if actions else self.idle_round_s).append(time.perf_counter() - t)
        return actions


def make_node(i: int, rng: random.Random) -> Node:
    return Node.make(
        f"node-{i:05d}",
        name=f"node-{i:05d}",
        state=NodeState.READY,
        capacity=NODE,
        allocatable=NODE,
        usage=Resources(rng.randrange(0, 2000), rng.randrange(0, 4 << 30)),
        zone=f"zone-{i % 3}",
        region="bench",
        labels={"rack": f"r{i % 40}"},
        last_heartbeat=time.time(),
    )


async def load(st: ClusterState, n: int, rng: random.Random) -> list[Node]:
    """N ready nodes and N/2 running replicas of N/100 settled workloads, 100 puts a txn."""
    await st.store.delete(ROOT, prefix=True)
    nodes = [make_node(i, rng) for i in range(n)]
    ops: list[Any] = [st.nodes.put_op(x.id, x) for x in nodes]
    per = 50
    for w in range(n // 100):
        spec = WorkloadSpec(name=f"settled-{w}", image="busybox", replicas=per, resources=SMALL)
        ops.append(st.workloads.put_op(spec.name, WorkloadRecord(spec=spec)))
        for k in range(per):
            r = Replica(
                id=f"{spec.name}-{k}",
                workload=spec.name,
                node_id=nodes[(w * per + k) % n].id,
                observed=ReplicaState.RUNNING,
                spec_version=1,
            )
            ops.append(st.replicas.put_op(f"{spec.name}/{r.id}", r))
    for i in range(0, len(ops), 100):
        await st.store.txn([], ops[i : i + 100])
    return nodes


async def usage_refreshes(st: ClusterState, nodes: list[Node], rate: float) -> None:
    """What the hub writes for heartbeats: a node's usage changes, nothing placement sees."""
    rng = random.Random(7)
    gap = 1.0 / rate
    next_at = time.perf_counter()
    while True:
        i = rng.randrange(len(nodes))
        nodes[i] = replace(
            nodes[i],
            usage=Resources(rng.randrange(0, 2000), rng.randrange(0, 4 << 30)),
            last_heartbeat=time.time(),
        )
        try:
            await st.nodes.put(nodes[i].id, nodes[i])
        except StoreError as e:  # a loaded machine: etcd slow; the hub would also go on
            print(f"usage write failed: {e}", file=sys.stderr, flush=True)
        next_at += gap
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


MODES = ["view", "view-rebuild", "snapshot"]


async def block(
    store: EtcdStore,
    observer: EtcdStore,
    mode: str,
    workloads: int,
    tag: str,
) -> dict[str, Any]:
    """Lead with one reconciler, apply ``workloads`` workloads of 10 one after another."""
    st = ClusterState(store)
    rec = TimedReconciler(
        st,
        SchedulerPlacer(reuse=mode != "view-rebuild"),
        RandomIds(random.Random(1)),
        SystemClock(),
        incremental=mode != "snapshot",
        debounce_s=DEBOUNCE_S[0],
    )
    fence: Fence = NO_FENCE
    lat: list[float] = []
    applied: dict[str, float] = {}
    seen: dict[str, int] = {}
    done: dict[str, asyncio.Event] = {}
    finished: dict[str, float] = {}
    rev = await observer.revision()
    prefix = f"{ROOT}replicas/{BENCH_PREFIX}"

    async def observe() -> None:
        async with contextlib.aclosing(observer.watch(prefix, start_revision=rev + 1)) as w:
            async for batch in w:
                now = time.perf_counter()
                for e in batch.events:
                    if e.type is not EventType.PUT or e.kv.version != 1:
                        continue
                    wl = e.key[len(f"{ROOT}replicas/") :].split("/")[0]
                    lat.append(now - applied[wl])
                    seen[wl] = seen.get(wl, 0) + 1
                    if seen[wl] == 10:
                        finished[wl] = now - applied[wl]
                        done[wl].set()

    failures = 0
    async with asyncio.TaskGroup() as tg:
        leading = tg.create_task(rec.lead(fence))
        watching = tg.create_task(observe())
        while rec.rounds < 2:  # noqa: ASYNC110 (polls the code under test)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        rec.round_s.clear()
        rec.snapshot_s.clear()  # idle rounds of the warm-up are kept: settled cluster
        t0 = time.perf_counter()
        for k in range(workloads):
            name = f"{BENCH_PREFIX}{tag}-{k}"
            spec = WorkloadSpec(name=name, image="busybox", replicas=10, resources=SMALL)
            done[name] = asyncio.Event()
            applied[name] = time.perf_counter()
            await st.workloads.put(name, WorkloadRecord(spec=spec, created_at=time.time()))
            try:
                await asyncio.wait_for(done[name].wait(), 30)
            except TimeoutError:
                failures += 1
        wall = time.perf_counter() - t0
        leading.cancel()
        watching.cancel()
    rounds = len(rec.round_s)
    await store.txn(
        [],
        [Delete(f"{ROOT}workloads/{BENCH_PREFIX}", True), Delete(prefix, True)],
    )
    return {
        "latency_s": lat,
        "round_s": rec.round_s,
        "idle_round_s": rec.idle_round_s[1:],  # not the first: the view's first listing
        "snapshot_s": rec.snapshot_s,
        "rounds": rounds,
        "wall_s": wall,
        "timeouts": failures,
        "slowest": sorted((round(v, 2) for v in finished.values()), reverse=True)[:3],
    }


def summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x * 1000 for p in parts for x in p["latency_s"]]
    rounds = [x * 1000 for p in parts for x in p["round_s"]]
    snaps = [x * 1000 for p in parts for x in p["snapshot_s"]]
    idle = [x * 1000 for p in parts for x in p["idle_round_s"]]
    wall = sum(p["wall_s"] for p in parts)
    return {
        "replicas": len(lat),
        "replica_p50_ms": round(percentile(lat, 50), 1),
        "replica_p95_ms": round(percentile(lat, 95), 1),
        "replica_max_ms": round(max(lat), 1) if lat else None,
        "placing_rounds": len(rounds),
        "round_p50_ms": round(percentile(rounds, 50), 1),
        "round_p95_ms": round(percentile(rounds, 95), 1),
        "idle_rounds": len(idle),
        "idle_round_p50_ms": round(percentile(idle, 50), 1),
        "wall_s": round(wall, 1),
        "snapshot_p50_ms": round(percentile(snaps, 50), 2),
        "snapshot_p95_ms": round(percentile(snaps, 95), 2),
        "timeouts": sum(p["timeouts"] for p in parts),
    }


async def one_size(
    c: SupervisedCluster, n: int, workloads: int, blocks: int, usage_rate: float
) -> dict[str, Any]:
    store = c.client()
    observer = c.client()
    writer = c.client()
    st = ClusterState(store)
    nodes = await load(st, n, random.Random(n))
    parts: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    async with asyncio.TaskGroup() as tg:
        usage = tg.create_task(usage_refreshes(ClusterState(writer), nodes, usage_rate))
        for b in range(blocks):
            order = MODES[b % len(MODES) :] + MODES[: b % len(MODES)]  # rotated per block
            for mode in order:
                part = await block(store, observer, mode, workloads, f"{mode}{b}")
                parts[mode].append(part)
                s = summary([part])
                print(
                    f"N={n} {mode:12s} block {b}: replica P50 {s['replica_p50_ms']} ms "
                    f"P95 {s['replica_p95_ms']} ms; round P50 {s['round_p50_ms']} ms "
                    f"(snapshot {s['snapshot_p50_ms']} ms), {s['placing_rounds']} placing rounds; "
                    f"idle round P50 {s['idle_round_p50_ms']} ms; "
                    f"slowest workloads (s): {part['slowest']}",
                    flush=True,
                )
        usage.cancel()
    for client in (store, observer, writer):
        await client.close()
    view, old = summary(parts["view"]), summary(parts["snapshot"])
    rebuild = summary(parts["view-rebuild"])
    return {
        "nodes": n,
        "existing_replicas": (n // 100) * 50,
        "workloads_per_mode": workloads * blocks,
        "view": view,
        "view-rebuild": rebuild,
        "snapshot": old,
        "ratio_rebuild_over_view": {
            "replica_p50": round(rebuild["replica_p50_ms"] / view["replica_p50_ms"], 2),
            "replica_p95": round(rebuild["replica_p95_ms"] / view["replica_p95_ms"], 2),
            "round_p50": round(rebuild["round_p50_ms"] / view["round_p50_ms"], 2),
        },
        "ratio_old_over_view": {
            "replica_p50": round(old["replica_p50_ms"] / view["replica_p50_ms"], 2),
            "replica_p95": round(old["replica_p95_ms"] / view["replica_p95_ms"], 2),
            "round_p50": round(old["round_p50_ms"] / view["round_p50_ms"], 2),
            "idle_round_p50": round(old["idle_round_p50_ms"] / view["idle_round_p50_ms"], 1),
            "snapshot_p50": round(old["snapshot_p50_ms"] / max(view["snapshot_p50_ms"], 1e-3), 1),
        },
    }


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.reconcile")
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--workloads", type=int, default=5, help="per block and mode")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--usage-rate", type=float, default=100.0, help="node writes/s")
    ap.add_argument("--debounce-ms", type=float, default=20.0, help="the reconciler's")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    DEBOUNCE_S[0] = args.debounce_ms / 1000
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    sizes = [1000] if args.quick else [int(x) for x in args.sizes.split(",")]
    workloads = 3 if args.quick else args.workloads
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as d:
        base = Path(d)
        async with SupervisedCluster(base, TestPki(base / "pki"), 1) as c:
            for n in sizes:
                results.append(await one_size(c, n, workloads, args.blocks, args.usage_rate))
                print(results[-1]["ratio_old_over_view"], flush=True)
                print(results[-1]["ratio_rebuild_over_view"], flush=True)
    write_results(
        "reconcile",
        {
            "setup": {
                "etcd": "1 member, loopback, mutual TLS (cloudless.testing.etcd)",
                "placer": "SchedulerPlacer (real scheduler)",
                "fence": "none (no election)",
                "workload": "10 replicas of 100m CPU / 64 MiB, applied one after another",
                "usage_refresh_writes_per_s": args.usage_rate,
                "debounce_ms": args.debounce_ms,
                "blocks_per_mode": args.blocks,
                "modes": {
                    "view": "rounds decide from the watch-fed LiveView, the placer patches "
                    "its node columns (NodeColumns.update) (default)",
                    "view-rebuild": "the same, but the placer rebuilds every snapshot",
                    "snapshot": "incremental=False: every round lists the three tables",
                },
                "latency": "workload put sent -> replica creation seen by a watcher",
                "machine": "2 cores shared with other engineers' test runs: noisy",
            },
            "sizes": results,
            "wall_s": round(time.perf_counter() - t0, 1),
            "command": "python -m bench.reconcile " + " ".join(argv),
        },
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
