"""Object store vs a plain aiohttp file server, one node, side by side in one run.

Both servers run in their own process on loopback; one async client (aiohttp) drives both
with the same requests: the store through SigV4 presigned URLs (auth checked on every
request), the baseline without auth. A third server, ``baseline_etag``, is the baseline plus
the MD5 of each PUT's body that S3 answers as its ETag: its PUT figures over the baseline's
(``etag_ceiling``) bound what any S3 server could reach on this machine. Rounds alternate the
servers' order to spread machine noise, the page cache is dropped after each server's turn
(``drop_page_cache``); each figure is the median of the rounds.

Workloads: PUT and GET of 1 MiB objects (4 concurrent), of 64 MiB objects (one at a time),
and of 4 KiB objects (16 concurrent: ops/s and P50 latency; then the stores list the round's
1,000 keys with ListObjectsV2, 5 times). Every object holds distinct random bytes (the store
deduplicates identical blocks). Each round GETs what it just PUT, so the store answers small
GETs from what it holds in memory; a second store with nothing held (``store_cold``) runs
the 4 KiB workload beside it.

With ``--before DIR`` a third server runs the store from the code tree at ``DIR`` (a ``git
archive`` of the commit a change started from), in the same rounds: before and after side by
side, each against the same baseline.

Run from the repo root: ``python -m bench.objectstore [--before DIR]`` ->
``bench/results/objectstore.json`` (sections other benchmarks wrote, e.g. ``cluster_runs`` by
``python -m bench.objectstore.cluster``, are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil

from bench.common import RESULTS, percentile, write_results
from bench.objectstore.servers import (
    run_baseline,
    run_baseline_etag,
    run_floor,
    run_store,
    run_store_cold,
    run_store_from,
)

MIB = 1 << 20
ROUNDS = 3
WORKLOADS = {
    # name: (object size, count, concurrency)
    "1MiB": (MIB, 24, 4),
    "64MiB": (64 * MIB, 2, 1),
    "4KiB": (4096, 1000, 16),
}
OWN = (
    "suite",
    "when",
    "machine",
    "command",
    "setup",
    "load_average_1_5_15",
    "page_cache",
    "workloads",
    "baseline",
    "baseline_etag",
    "etag_ceiling",
    "store_over_baseline_etag",
    "aiohttp_floor",
    "store_cold",
    "store",
    "store_over_baseline",
    "every_round",
    "goals",
    "before",
    "before_over_baseline",
    "before_code",
)
"""The sections of the results file this run writes; every other section (the cluster,
timeline and small-parts benchmarks', recorded before/after rounds) is carried over."""
GOALS = {  # the goals, store / baseline; for 4 KiB ops per second of the server's CPU
    "GET 64MiB": 0.9,
    "PUT 64MiB": 0.8,
    "GET 1MiB": 0.8,
    "PUT 1MiB": 0.6,
    "GET 4KiB ops per cpu-s": 3000,
    "PUT 4KiB ops per cpu-s": 1000,
}


def start(
    target: Callable[..., None], root: str
) -> tuple[mp.process.BaseProcess, tuple[int, str, str]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(root, child), daemon=True)
    proc.start()
    if not parent.poll(60):
        raise RuntimeError(f"{getattr(target, '__name__', target)} did not start")
    return proc, parent.recv()


class Target:
    def __init__(
        self,
        name: str,
        port: int,
        key_id: str,
        secret: str,
        *,
        pid: int = 0,
        only: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.only = only
        """Workload names: this target runs only those (all of them if empty)."""
        self.proc = psutil.Process(pid) if pid else None
        """The server's process, for its CPU time (``measure`` needs it)."""
        self.base = f"http://127.0.0.1:{port}"
        self.s3 = None
        if key_id:
            import boto3  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]

            self.s3 = boto3.client(
                "s3",
                endpoint_url=self.base,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                region_name="cloudless",
                config=Config(s3={"addressing_style": "path"}),
            )

    def cpu(self) -> float:
        """CPU seconds the server's process has spent, every thread included."""
        if self.proc is None:
            raise RuntimeError(f"{self.name}: no process to read the CPU time of")
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def url(self, method: str, key: str) -> str:
        if self.s3 is None:
            return f"{self.base}/{key}"
        op = "put_object" if method == "PUT" else "get_object"
        return str(
            self.s3.generate_presigned_url(
                op, Params={"Bucket": "bench", "Key": key}, ExpiresIn=3600
            )
        )


async def slices(body: bytes) -> AsyncIterator[memoryview]:
    """``body`` in 1 MiB views, which aiohttp writes one by one, waiting for each to drain.

    Given the whole bytes, aiohttp on Python 3.11 joins them to the request head (a copy) and
    the transport buffers what the socket does not take at once in a bytearray it trims from
    the front after each send: ~2 ms of the client's CPU per MiB, ~130 ms per 64 MiB PUT,
    taken from the cores the servers share. In slices it is ~0.25 ms per MiB."""
    view = memoryview(body)
    for at in range(0, len(body), MIB):
        yield view[at : at + MIB]


async def run(
    session: aiohttp.ClientSession,
    method: str,
    urls: list[str],
    bodies: list[bytes] | None,
    concurrency: int,
) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            if method == "PUT":
                assert bodies is not None
                async with session.put(
                    urls[i],
                    data=slices(bodies[i]),
                    headers={"Content-Length": str(len(bodies[i]))},
                ) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"PUT {r.status}: {(await r.text())[:200]}")
            else:
                async with session.get(urls[i]) as r:
                    if r.status != 200:
                        raise RuntimeError(f"GET {r.status}")
                    async for _ in r.content.iter_chunked(1 << 20):
                        pass
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(urls))))
    return time.perf_counter() - t0, lat


KEEP_CACHED = (".db", "-wal", "-shm", ".sqlite", ".wal", ".snap")
"""Files whose pages ``drop_page_cache`` leaves cached (by the end of their name, and
etcd's ``db``): a node's SQLite metadata and the coordinator's etcd, hot in the page cache
of any node that serves (dropped, their next writes would first read the pages they partly
overwrite from disk)."""


DROP_CACHES = "/proc/sys/vm/drop_caches"
PAGE_CACHE = "dropped after each server's turn, the nodes' metadata read back (drop_page_cache)"
"""What the results say of the page cache, for every bench that calls ``drop_page_cache``."""


def drop_page_cache(under: str | Path) -> None:
    """Write out and drop the page cache, then read back the metadata files under ``under``
    (the run's servers' directories; ``KEEP_CACHED``), so every turn starts with the page
    cache the same size and the nodes' metadata as hot as on any node that serves.

    Called after each server's turn at each workload. On this project's VMs, writes into the
    page cache cost ~0.3 ms per MiB while it holds less than ~0.5 GiB and ~8 ms per MiB (500
    ms of system CPU per 64 MiB) beyond (the host backs the guest's memory as it grows):
    without the drop, whichever server wrote after the first ~0.5 GiB of a run was measured at
    a tenth of its speed. Where ``/proc/sys/vm/drop_caches`` is not writable (not root), the
    data files under ``under`` are dropped one by one instead."""
    os.sync()
    try:
        with open(DROP_CACHES, "w") as f:
            f.write("1")
        everything = True
    except OSError:
        everything = False
    for folder, _, names in os.walk(under):
        for name in names:
            keep = name.endswith(KEEP_CACHED) or name == "db"
            if everything and not keep:
                continue
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except OSError:  # removed meanwhile, or not ours to read
                continue
            try:
                if keep:
                    while os.read(fd, 1 << 20):
                        pass
                else:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def measure(targets: list[Target], root: str) -> dict[str, dict[str, list[float]]]:
    """Every workload on every target, in ``ROUNDS`` rounds; ``root``: the directory all the
    servers keep their data under."""
    results: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    client = psutil.Process()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for rnd in range(ROUNDS):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for wl, (size, count, conc) in WORKLOADS.items():
                for t in order:
                    if t.only and wl not in t.only:
                        continue
                    keys = [f"r{rnd}-{wl}-{i}" for i in range(count)]
                    bodies = [os.urandom(size) for _ in keys]
                    puts = [t.url("PUT", k) for k in keys]
                    gets = [t.url("GET", k) for k in keys]
                    for method, urls in (("PUT", puts), ("GET", gets)):
                        cpu0, mine0 = t.cpu(), client.cpu_times()
                        elapsed, lat = await run(session, method, urls, bodies, conc)
                        cpu, mine = t.cpu() - cpu0, client.cpu_times()
                        r = results[t.name]
                        r.setdefault(f"{method} {wl} server cpu ms/op", []).append(
                            cpu / count * 1000
                        )
                        r.setdefault(f"{method} {wl} client cpu ms/op", []).append(
                            (mine.user + mine.system - mine0.user - mine0.system) / count * 1000
                        )
                        if size >= MIB:
                            r.setdefault(f"{method} {wl} MiB/s", []).append(
                                size * count / MIB / elapsed
                            )
                        else:
                            r.setdefault(f"{method} {wl} ops/s", []).append(count / elapsed)
                            r.setdefault(f"{method} {wl} ops per cpu-s", []).append(count / cpu)
                            r.setdefault(f"{method} {wl} p50 ms", []).append(
                                percentile(lat, 50) * 1000
                            )
                    if wl == "4KiB" and t.s3 is not None:
                        await list_keys(session, t, f"r{rnd}-{wl}-", count, results[t.name])
                    del bodies
                    drop_page_cache(root)
    return results


LISTS = 5


async def list_keys(
    session: aiohttp.ClientSession,
    target: Target,
    prefix: str,
    count: int,
    into: dict[str, list[float]],
) -> None:
    """ListObjectsV2 of the ``count`` keys a round just wrote (one page), ``LISTS`` times:
    what a listing of small objects costs (their rows' heads only)."""
    assert target.s3 is not None
    url = target.s3.generate_presigned_url(
        "list_objects_v2",
        Params={"Bucket": "bench", "Prefix": prefix, "MaxKeys": count},
        ExpiresIn=3600,
    )
    cpu0, times = (target.cpu() if target.proc else 0.0), []
    for _ in range(LISTS):
        t = time.perf_counter()
        async with session.get(url) as r:
            text = await r.text()
            if r.status != 200 or text.count("<Key>") != count:
                raise RuntimeError(f"LIST {r.status}: {text[:200]}")
        times.append(time.perf_counter() - t)
    into.setdefault(f"LIST {count} keys ms", []).append(statistics.median(times) * 1000)
    if target.proc:  # a cluster's processes are not one target's
        into.setdefault(f"LIST {count} keys server cpu ms", []).append(
            (target.cpu() - cpu0) / LISTS * 1000
        )


ETAG_WORKLOADS = ("PUT 64MiB MiB/s", "PUT 1MiB MiB/s")
"""The workloads ``baseline_etag`` runs for: what S3's MD5 ETag costs a plain PUT."""

RATIOS = (
    "GET 64MiB MiB/s",
    "PUT 64MiB MiB/s",
    "GET 1MiB MiB/s",
    "PUT 1MiB MiB/s",
    "GET 4KiB ops/s",
    "PUT 4KiB ops/s",
)


def over(
    store: dict[str, float], base: dict[str, float], keys: tuple[str, ...] = RATIOS
) -> dict[str, float]:
    """store / baseline for each of ``keys`` (throughput: higher is better)."""
    return {k.replace(" MiB/s", ""): round(store[k] / base[k], 2) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="a code tree whose store runs beside this one's")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-objectstore-") as tmp:
        procs = []
        try:
            p1, (port1, _, _) = start(run_baseline, f"{tmp}/baseline")
            procs.append(p1)
            targets = [Target("baseline", port1, "", "", pid=p1.pid or 0)]
            pe, (porte, _, _) = start(run_baseline_etag, f"{tmp}/baseline_etag")
            procs.append(pe)
            targets.append(
                Target("baseline_etag", porte, "", "", pid=pe.pid or 0, only=("1MiB", "64MiB"))
            )
            pf, (portf, _, _) = start(run_floor, f"{tmp}/floor")
            procs.append(pf)
            targets.append(Target("aiohttp_floor", portf, "", "", pid=pf.pid or 0, only=("4KiB",)))
            if args.before:
                code = os.path.abspath(args.before)
                p0, (port0, key0, secret0) = start(
                    functools.partial(run_store_from, code), f"{tmp}/before"
                )
                procs.append(p0)
                targets.append(Target("before", port0, key0, secret0, pid=p0.pid or 0))
            pc, (portc, keyc, secretc) = start(run_store_cold, f"{tmp}/cold")
            procs.append(pc)
            targets.append(
                Target("store_cold", portc, keyc, secretc, pid=pc.pid or 0, only=("4KiB",))
            )
            p2, (port2, key_id, secret) = start(run_store, f"{tmp}/store")
            procs.append(p2)
            targets.append(Target("store", port2, key_id, secret, pid=p2.pid or 0))
            load_before = os.getloadavg()
            raw = asyncio.run(measure(targets, tmp))
            load_after = os.getloadavg()
        finally:
            for p in procs:
                p.kill()
                p.join(10)
    figures = {
        name: {k: round(statistics.median(v), 1) for k, v in r.items()} for name, r in raw.items()
    }
    base, store = figures["baseline"], figures["store"]
    ratios = over(store, base)
    etag = figures["baseline_etag"]
    etag_ceiling = over(etag, base, ETAG_WORKLOADS)
    goals = {}
    for goal, want in GOALS.items():
        have = store[goal] if goal.endswith("cpu-s") else ratios[goal]
        goals[goal] = {"goal": want, "measured": have, "met": have >= want}
    before = {}
    if "before" in figures:
        before = {
            "before": figures["before"],
            "before_over_baseline": over(figures["before"], base),
            "before_code": args.before,
        }
    previous = RESULTS / "objectstore.json"
    old = json.loads(previous.read_text()) if previous.exists() else {}
    write_results(
        "objectstore",
        {
            **{k: v for k, v in old.items() if k not in OWN},
            "command": "python -m bench.objectstore"
            + (f" --before {args.before}" if args.before else ""),
            "setup": "one node, R=1, loopback, server and baseline each in one process (one "
            "event loop); SigV4 presigned URLs for the store; client: aiohttp in a third "
            "process, PUT bodies in 1 MiB slices (see slices); "
            f"median of {ROUNDS} alternating rounds; cpus={os.cpu_count()}",
            "load_average_1_5_15": {"before": load_before, "after": load_after},
            "page_cache": PAGE_CACHE,
            "workloads": {
                k: {"size": s, "count": c, "concurrency": n} for k, (s, c, n) in WORKLOADS.items()
            },
            "baseline": base,
            "baseline_etag": etag,
            "etag_ceiling": etag_ceiling,
            "store_over_baseline_etag": over(store, etag, ETAG_WORKLOADS),
            "aiohttp_floor": figures["aiohttp_floor"],
            "store_cold": figures["store_cold"],
            "store": store,
            "store_over_baseline": ratios,
            "every_round": {
                name: {k: [round(x, 1) for x in v] for k, v in r.items()} for name, r in raw.items()
            },
            "goals": goals,
            **before,
        },
    )
    for k in base:
        was = f" before {figures['before'][k]:>9}" if "before" in figures else ""
        print(f"{k:24s} baseline {base[k]:>9}{was} store {store[k]:>9}")
    for k in (k for k in store if k.startswith("LIST")):
        was = f" before {figures['before'][k]:>9}" if "before" in figures else ""
        print(f"{k:24s} store {store[k]:>9}{was} nothing held {figures['store_cold'][k]:>9}")
    for k, floor in figures["aiohttp_floor"].items():
        print(f"{k:24s} aiohttp floor {floor:>9}")
    for k, cold in figures["store_cold"].items():
        print(f"{k:24s} store, nothing held in memory {cold:>9}")
    if before:
        print("before / baseline", before["before_over_baseline"])
    print("store / baseline ", ratios)
    print("baseline_etag / baseline (the ceiling of an S3 PUT here)", etag_ceiling)
    for g, v in goals.items():
        print(f"goal {g:18s} {v}")


if __name__ == "__main__":
    main()
