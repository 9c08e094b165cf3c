"""Store benchmarks on a real 3-member etcd cluster (our launcher, loopback, mTLS).

* write rates through ``EtcdStore`` vs the raw etcd3aio client, side by side in one run
  (rounds alternate A/B to spread machine noise), sequential and 16-way concurrent;
* failover after SIGKILL of the leader: time to a new leader accepting writes (probed with
  short attempts), and the gap a default-configured ``EtcdStore`` writer sees;
* watch delivery latency (put acknowledged -> event delivered).

Run from the repo root: ``python -m bench.store`` -> ``bench/results/store.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from etcd3aio import Etcd3Client
from etcd3aio.kv import KVService

from bench.common import percentile, write_results
from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.tls import ETCD_SERVER_NAME
from cloudless.store.types import Compare, Put
from cloudless.testing.etcd import SupervisedCluster, TestPki

SEQ = 600
CONC_TOTAL = 2400
CONC = 16
ROUNDS = 3
FAILOVERS = 8
WATCH_N = 400


async def seq_rate(put: Any, tag: str) -> float:
    t = time.perf_counter()
    for i in range(SEQ):
        await put(f"/bench/{tag}/{i}", b"x" * 100)
    return SEQ / (time.perf_counter() - t)


async def conc_rate(put: Any, tag: str) -> float:
    per = CONC_TOTAL // CONC

    async def worker(w: int) -> None:
        for i in range(per):
            await put(f"/bench/{tag}/{w}/{i}", b"x" * 100)

    t = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for w in range(CONC):
            tg.create_task(worker(w))
    return CONC_TOTAL / (time.perf_counter() - t)


async def write_rates(c: SupervisedCluster) -> dict[str, Any]:
    ours = c.client()
    tls = c.pki.client()
    raw = Etcd3Client(
        c.endpoints,
        ca_cert=tls.ca_pem,
        cert_key=tls.key_pem,
        cert_chain=tls.cert_pem,
        tls_server_name=ETCD_SERVER_NAME,
    )
    await raw.connect()
    assert raw.kv is not None
    raw_kv = raw.kv

    async def ours_put(k: str, v: bytes) -> None:
        await ours.put(k, v)

    async def raw_put(k: str, v: bytes) -> None:
        await raw_kv.put(k, v)

    async def ours_cas(k: str, v: bytes) -> None:
        await ours.txn([Compare.absent(k)], [Put(k, v)])

    async def raw_cas(k: str, v: bytes) -> None:
        await raw_kv.txn([KVService.txn_compare_version(k, 0)], [KVService.txn_op_put(k, v)])

    await seq_rate(ours_put, "warm")  # warm connections and etcd
    await seq_rate(raw_put, "warm")
    keys = ("seq_ours", "seq_raw", "conc_ours", "conc_raw", "cas_ours", "cas_raw")
    res: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(ROUNDS):
        order = [("ours", ours_put), ("raw", raw_put)]
        if r % 2:
            order.reverse()
        for name, put in order:
            res[f"seq_{name}"].append(await seq_rate(put, f"s{r}{name}"))
        for name, put in order:
            res[f"conc_{name}"].append(await conc_rate(put, f"c{r}{name}"))
        cas_order = [("ours", ours_cas), ("raw", raw_cas)]
        if r % 2:
            cas_order.reverse()
        for name, cas in cas_order:
            res[f"cas_{name}"].append(await conc_rate(cas, f"x{r}{name}"))
    await ours.delete("/bench/", prefix=True)
    await ours.close()
    await raw.close()
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
        "sequential_writes_per_s": {"ours": round(med["seq_ours"]), "raw": round(med["seq_raw"])},
        "concurrent_writes_per_s": {
            "ours": round(med["conc_ours"]),
            "raw": round(med["conc_raw"]),
            "concurrency": CONC,
        },
        "overhead_ratio_sequential": round(med["seq_raw"] / med["seq_ours"], 3),
        "overhead_ratio_concurrent": round(med["conc_raw"] / med["conc_ours"], 3),
        "concurrent_cas_txn_per_s": {
            "ours": round(med["cas_ours"]),
            "raw": round(med["cas_raw"]),
            "what": "create-if-absent transactions, 16 writers",
        },
        "overhead_ratio_cas": round(med["cas_raw"] / med["cas_ours"], 3),
        "overhead_target": 1.3,
        "rounds": ROUNDS,
        "per_round": {k: [round(x) for x in v] for k, v in res.items()},
    }


async def all_up(c: SupervisedCluster) -> None:
    for _ in range(600):
        sts = await c.statuses()
        if all(s is not None and s.leader for s in sts):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("cluster did not recover")


async def failover(c: SupervisedCluster) -> dict[str, Any]:
    probe = c.client(request_timeout=0.25, retry_for=0.5)
    default = c.client()
    fast = c.client(request_timeout=1.0)
    cluster_s: list[float] = []
    client_s: list[float] = []
    fast_s: list[float] = []
    for trial in range(FAILOVERS):
        await all_up(c)
        await asyncio.sleep(1.0)
        await default.put("/bench/fo", b"%d" % trial)
        leader = await c.wait_leader()

        async def until_write(store: EtcdStore, t0: float) -> float:
            while True:
                try:
                    await store.put("/bench/fo", b"after")
                    return time.monotonic() - t0
                except StoreError:
                    await asyncio.sleep(0.01)

        t0 = time.monotonic()
        c.kill(leader)
        a, b, f = await asyncio.gather(
            until_write(probe, t0), until_write(default, t0), until_write(fast, t0)
        )
        cluster_s.append(a)
        client_s.append(b)
        fast_s.append(f)
    await probe.close()
    await default.close()
    await fast.close()
    return {
        "trials": FAILOVERS,
        "cluster_failover_s": {
            "p50": round(percentile(cluster_s, 50), 3),
            "p95": round(percentile(cluster_s, 95), 3),
            "max": round(max(cluster_s), 3),
            "all": [round(x, 3) for x in cluster_s],
            "how": "SIGKILL leader -> first acknowledged write, probing with 0.25 s attempts",
        },
        "default_client_gap_s": {
            "p50": round(percentile(client_s, 50), 3),
            "p95": round(percentile(client_s, 95), 3),
            "how": "same, through EtcdStore defaults (2 s request timeout: a write caught "
            "in flight at the dead leader waits it out, then OutcomeUnknown, then retry)",
        },
        "client_gap_1s_timeout_s": {
            "p50": round(percentile(fast_s, 50), 3),
            "p95": round(percentile(fast_s, 95), 3),
            "how": "same, EtcdStore(request_timeout=1.0)",
        },
        "target_p50_s": 1.5,
    }


async def watch_latency(c: SupervisedCluster) -> dict[str, Any]:
    store = c.client()
    writer = c.client()
    rev = await store.revision()
    sent: dict[str, float] = {}
    lat: list[float] = []
    async with contextlib.aclosing(store.watch("/bench/w/", start_revision=rev + 1)) as w:

        async def consume() -> None:
            async for batch in w:
                now = time.perf_counter()
                for e in batch.events:
                    lat.append(now - sent[e.key])
                if len(lat) >= WATCH_N:
                    return

        task = asyncio.ensure_future(consume())
        for i in range(WATCH_N):
            key = f"/bench/w/{i}"
            sent[key] = time.perf_counter()
            await writer.put(key, b"x")
            await asyncio.sleep(0.005)
        await asyncio.wait_for(task, 30)
    await store.close()
    await writer.close()
    ms = [x * 1000 for x in lat]
    return {
        "events": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "how": "put sent -> event delivered to a watcher on another client",
    }


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as d:
        base = Path(d)
        async with SupervisedCluster(base, TestPki(base / "pki"), 3) as c:
            cfg = c.configs[0]
            rates = await write_rates(c)
            print("write rates", rates, flush=True)
            watch = await watch_latency(c)
            print("watch", watch, flush=True)
            fo = await failover(c)
            print("failover", fo, flush=True)
    write_results(
        "store",
        {
            "cluster": {
                "members": 3,
                "transport": "loopback, mutual TLS",
                "etcd_heartbeat_ms": cfg.heartbeat_ms,
                "etcd_election_timeout_ms": cfg.election_ms,
                "pre_vote": True,
                "snapshot_count": cfg.snapshot_count,
            },
            "writes": rates,
            "watch_delivery": watch,
            "failover": fo,
            "command": "python -m bench.store",
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
