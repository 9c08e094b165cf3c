"""What S3's MD5 ETag alone costs a PUT on this machine: the plain file server of
``bench.objectstore`` beside copies of it that also compute the MD5 of the body, which S3
answers as a single PUT's ETag, in each of the ways a server could arrange it
(``servers.ETAG_WAYS``; the first, ``thread``, is the one-node bench's ``baseline_etag``).

Each figure is MiB/s of PUTs driven by the one-node bench's client (1 MiB bodies four at a
time, 64 MiB ones alone), the page cache dropped after each turn, rounds alternating the
order; median of the rounds over the file server's. No store runs: the best of these is the
most an S3 server's PUT can reach over the plain file server here, whatever else it does.

Run from the repo root: ``python -m bench.objectstore.ceiling [--rounds N]`` -> the
``etag_ceiling_variants`` section of ``bench/results/objectstore.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import aiohttp

from bench.common import write_section
from bench.objectstore.__main__ import MIB, PAGE_CACHE, Target, drop_page_cache, run, start
from bench.objectstore.servers import ETAG_WAYS, run_baseline, run_baseline_etag

SIZES = {"1MiB": (MIB, 96, 4), "64MiB": (64 * MIB, 4, 1)}  # name: (size, count, concurrency)


async def measure(
    targets: list[Target], rounds: int, root: str
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for rnd in range(rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for wl, (size, count, conc) in SIZES.items():
                for t in order:
                    bodies = [os.urandom(size) for _ in range(count)]
                    urls = [t.url("PUT", f"r{rnd}-{wl}-{i}") for i in range(count)]
                    elapsed, _ = await run(session, "PUT", urls, bodies, conc)
                    out[t.name].setdefault(f"PUT {wl} MiB/s", []).append(
                        round(size * count / MIB / elapsed, 1)
                    )
                    del bodies
                    drop_page_cache(root)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    servers: dict[str, Callable[[str, Connection], None]] = {
        "baseline": run_baseline,
        **{w: functools.partial(run_baseline_etag, way=w) for w in ETAG_WAYS},
    }
    procs = []
    with tempfile.TemporaryDirectory(prefix="bench-ceiling-") as tmp:
        try:
            targets = []
            for name, target in servers.items():
                proc, (port, _, _) = start(target, f"{tmp}/{name}")
                procs.append(proc)
                targets.append(Target(name, port, "", "", pid=proc.pid or 0))
            load_before = os.getloadavg()
            raw = asyncio.run(measure(targets, args.rounds, tmp))
            load_after = os.getloadavg()
        finally:
            for p in procs:
                p.kill()
                p.join(10)
    figures = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in raw.items()}
    base = figures["baseline"]
    over = {
        n: {k: round(v / base[k], 2) for k, v in f.items()}
        for n, f in figures.items()
        if n != "baseline"
    }
    section = {
        "command": f"python -m bench.objectstore.ceiling --rounds {args.rounds}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1_5_15": {"before": load_before, "after": load_after},
        "page_cache": PAGE_CACHE,
        "workloads": {
            k: {"size": s, "count": c, "concurrency": n} for k, (s, c, n) in SIZES.items()
        },
        "figures": figures,
        "over_baseline": over,
        "every_round": raw,
    }
    write_section("objectstore", "etag_ceiling_variants", section)
    for n, f in over.items():
        print(f"{n:10s} over the file server {f}")


if __name__ == "__main__":
    main()
