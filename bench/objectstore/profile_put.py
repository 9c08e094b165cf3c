"""One replicated PUT, taken apart: three object-store nodes (R=3, mutual TLS) in this
process on loopback (``cloudless.objectstore.testing.LoopbackCluster``), PUTs through node
n1's engine, every node-to-node call timed, and a cProfile of the whole run.

Prints, per object size: the P50 of a PUT, the calls one PUT makes (by kind) and the rounds
of calls it waits for (calls that overlap count once), the P50 of each kind of call, the
local fsync time per block, the CPU the process (all three nodes) spent per PUT (background
calls included: a figure the machine's load barely moves), and the top of the profile by own
time. Where the three nodes
share one event loop, their CPU adds up in one thread: the figures show where a PUT waits,
not what separate processes would take.

Run from the repo root: ``python -m bench.objectstore.profile_put [--count N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.rpc import Peer
from cloudless.objectstore.testing import LoopbackCluster

CALLS = ("batch", "merge", "entry", "range", "put_block", "get_block", "hint")


class Tracer:
    """Wraps every ``Peer`` call: (kind, start, end) of each, for the PUT being traced."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, peer: Peer) -> None:
        for kind in CALLS:
            inner = getattr(peer, kind, None)
            if inner is None:  # older code under comparison
                continue
            setattr(peer, kind, self._timed(kind, inner))

    def _timed(
        self, kind: str, inner: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.spans.append((kind, t, time.perf_counter()))

        return call


def rounds(spans: list[tuple[str, float, float]]) -> int:
    """How many sequential waits the calls form: overlapping calls count as one."""
    n, end = 0, -1.0
    for _, s, e in sorted(spans, key=lambda x: x[1]):
        if s >= end:
            n += 1
            end = e
        else:
            end = max(end, e)
    return n


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def measure(base: Path, size: int, count: int, fsync: bool) -> dict[str, Any]:
    roles = {f"n{i}": NodeRole(f"z{i}", 1) for i in range(1, 4)}
    cluster = await LoopbackCluster(base, roles, replication=3, fsync_blocks=fsync).start()
    tracer = Tracer()
    try:
        for node in cluster.nodes.values():
            assert node.cluster is not None
            for peer in node.cluster.peers.values():
                tracer.wrap(peer)
        engine = cluster.engine("n1")
        n1 = cluster.nodes["n1"].cluster
        assert n1 is not None
        latency: list[float] = []
        per_put: list[dict[str, int]] = []
        waits: list[int] = []
        cpu = time.process_time()
        for i in range(count):
            data = os.urandom(size)
            tracer.spans.clear()
            t = time.perf_counter()
            await engine.put("b", f"k{i}", body(data), content_type="x", user_meta={})
            latency.append(time.perf_counter() - t)
            kinds: dict[str, int] = defaultdict(int)
            for kind, _, _ in tracer.spans:
                kinds[kind] += 1
            per_put.append(dict(kinds))
            waits.append(rounds(tracer.spans))
        # the background calls of the last PUT finish before the next figure
        await asyncio.sleep(0.2)
        cpu = time.process_time() - cpu
        by_kind: dict[str, list[float]] = defaultdict(list)
        for kind, s, e in tracer.spans:
            by_kind[kind].append(e - s)
        durable: list[float] = []
        blocks = cluster.nodes["n1"].local.blocks
        for _ in range(20):
            data = os.urandom(size)
            t = time.perf_counter()
            blocks.write_sync(os.urandom(32).hex(), data)
            durable.append(time.perf_counter() - t)
        return {
            "size": size,
            "put_p50_ms": round(statistics.median(latency) * 1000, 2),
            "cpu_ms_per_put": round(cpu * 1000 / count, 2),
            "calls_per_put": per_put[len(per_put) // 2],
            "waits_per_put_p50": statistics.median(waits),
            "call_p50_ms": {
                k: round(statistics.median(v) * 1000, 2) for k, v in sorted(by_kind.items())
            },
            "durable_block_write_p50_ms": round(statistics.median(durable) * 1000, 2),
        }
    finally:
        await cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", action="store_true", help="timings only (no cProfile)")
    ap.add_argument("--sizes", default="4096,1048576", help="object sizes, comma-separated")
    ap.add_argument("--no-fsync", action="store_true", help="blocks flushed later, as agents do")
    args = ap.parse_args()
    prof = cProfile.Profile()
    out = []
    with tempfile.TemporaryDirectory(prefix="profile-put-") as tmp:
        if not args.no_profile:
            prof.enable()
        for size in (int(x) for x in args.sizes.split(",")):
            run = measure(Path(tmp) / str(size), size, args.count, not args.no_fsync)
            out.append(asyncio.run(run))
        prof.disable()
    for r in out:
        print(r)
    if args.no_profile:
        return
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
    print(s.getvalue())


if __name__ == "__main__":
    main()
