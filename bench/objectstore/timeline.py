"""Where a small R=3 PUT's time goes in the agents: a coordinator and three ``cloudless agent
--storage`` processes on loopback (``bench.objectstore.cluster.start_cluster``), 4 KiB PUTs
one at a time through one agent's S3 endpoint, and every step of each PUT timed in the
process that took it:

* in the gateway: the S3 request (``s3``), the engine's write of a one-block object
  (``put_one``), its round with the block, reference and read (``together``), the object
  row's commit (``commit``, its replicated ``write``), and each call to a peer as the caller
  sees it (``batch``, ``merge``: from the call's start to its answer);
* in the replicas: the same calls as the peer serves them (``serve_batch``,
  ``serve_merge``: from the start of the call's work to its end, over HTTP or the call
  stream).

The probes are put into the agents by a ``sitecustomize`` module on their ``PYTHONPATH``
(a temporary directory: nothing of it is in the agents' code), each appending
``step start end`` (wall clock, shared by the processes of one machine) to a file per
process. Each PUT's steps are read relative to the start of its S3 request; the figures are
medians over the PUTs. Between the caller's ``batch`` start and the replica's
``serve_batch`` start lie the request's way there (the caller's send, TLS, loopback, the
replica's HTTP parsing); between the replica's end and the caller's answer, the way back.

Run from the repo root: ``python -m bench.objectstore.timeline [--count N]`` -> the
``timeline`` section of ``bench/results/objectstore.json`` (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

from bench.common import percentile, write_section
from bench.objectstore.__main__ import Target, run

PROBES = """
import asyncio, functools, os, time
_where = os.environ.get("CLOUDLESS_BENCH_TIMELINE")
if _where:
    _out = open(os.path.join(_where, f"{os.getpid()}.txt"), "a", buffering=1)

    def _probe(cls, name, step):
        inner = getattr(cls, name)
        if not asyncio.iscoroutinefunction(inner):

            @functools.wraps(inner)
            def timed(*a, **k):
                t = time.time()
                try:
                    return inner(*a, **k)
                finally:
                    _out.write(f"{step} {t:.6f} {time.time():.6f}\\n")

        else:

            @functools.wraps(inner)
            async def timed(*a, **k):
                t = time.time()
                try:
                    return await inner(*a, **k)
                finally:
                    _out.write(f"{step} {t:.6f} {time.time():.6f}\\n")

        setattr(cls, name, timed)

    from cloudless.objectstore import replication, rpc
    from cloudless.objectstore.engine import Engine
    from cloudless.objectstore.s3.server import S3Server

    for _cls, _name, _step in [
        (S3Server, "handle", "s3"),
        (Engine, "_put_one", "put_one"),
        (Engine, "_commit", "commit"),
        (replication.Cluster, "together", "together"),
        (replication.ReplicatedTable, "_write", "write"),
        (rpc.Peer, "batch", "batch"),
        (rpc.Peer, "merge", "merge"),
        (rpc.RpcServer, "_batch", "serve_batch"),
        (rpc.RpcServer, "_merge", "serve_merge"),
    ]:
        _probe(_cls, _name, _step)
"""

Span = tuple[str, float, float]


def read_spans(where: Path) -> dict[int, list[Span]]:
    """Each process's spans (by pid), from the files the probes wrote."""
    out: dict[int, list[Span]] = {}
    for f in where.glob("*.txt"):
        spans = []
        for line in f.read_text().splitlines():
            step, a, b = line.split()
            spans.append((step, float(a), float(b)))
        if spans:
            out[int(f.stem)] = spans
    return out


def steps(by_pid: dict[int, list[Span]], after: float) -> dict[str, list[float]]:
    """For each S3 request started after ``after`` in the gateway (the process with the
    ``batch`` calls): when each step started (``<step> at``) and how long it took (``<step>
    took``) relative to the request's start, in seconds; for calls to peers the first to
    answer, for the replicas' side the first to start."""
    gateway = max(by_pid, key=lambda p: sum(s[0] == "batch" for s in by_pid[p]))
    mine = [s for s in by_pid[gateway] if s[1] >= after]
    theirs = [s for p, spans in by_pid.items() if p != gateway for s in spans if s[1] >= after]
    out: dict[str, list[float]] = defaultdict(list)
    for _, a, b in sorted(s for s in mine if s[0] == "s3"):
        out["s3 took"].append(b - a)
        inside = [s for s in mine if a <= s[1] <= b and s[0] != "s3"]
        served = [s for s in theirs if a <= s[1] <= b]
        for step in ("put_one", "together", "commit", "write"):
            xs = [s for s in inside if s[0] == step]
            if xs:
                out[f"{step} at"].append(xs[0][1] - a)
                out[f"{step} took"].append(xs[0][2] - xs[0][1])
        for step in ("batch", "merge"):
            xs = sorted((s for s in inside if s[0] == step), key=lambda s: s[2])
            if xs:
                out[f"{step} at"].append(min(s[1] for s in xs) - a)
                out[f"{step} took"].append(xs[0][2] - xs[0][1])
        for step in ("serve_batch", "serve_merge"):
            xs = sorted((s for s in served if s[0] == step), key=lambda s: s[1])
            if xs:
                out[f"{step} at"].append(xs[0][1] - a)
                out[f"{step} took"].append(xs[0][2] - xs[0][1])
    return out


async def put_one_at_a_time(target: Target, count: int) -> list[float]:
    async with aiohttp.ClientSession() as session:
        keys = [f"t{i}" for i in range(count)]
        bodies = [os.urandom(4096) for _ in keys]
        _, lat = await run(session, "PUT", [target.url("PUT", k) for k in keys], bodies, 1)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-objectstore-timeline-") as tmpdir:
        tmp = Path(tmpdir)
        probes, spans = tmp / "probes", tmp / "spans"
        probes.mkdir()
        spans.mkdir()
        (probes / "sitecustomize.py").write_text(PROBES)
        os.environ["CLOUDLESS_BENCH_TIMELINE"] = str(spans)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(probes), str(Path(__file__).resolve().parents[2])]
        )
        from bench.objectstore.cluster import start_cluster  # after the environment is set

        cluster, key = start_cluster(tmp / "cluster", None)
        try:
            target = Target("R=3", int(cluster.agents[0].s3_port), key.key_id, key.secret)
            after = time.time()
            load = os.getloadavg()
            lat = asyncio.run(put_one_at_a_time(target, args.count))
        finally:
            cluster.close()
        found = steps(read_spans(spans), after)
    medians = {k: round(statistics.median(v) * 1000, 3) for k, v in found.items()}
    section = {
        "command": f"python -m bench.objectstore.timeline --count {args.count}",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1_5_15": load,
        "client_put_p50_ms": round(percentile(lat, 50) * 1000, 2),
        "unit": "ms from the start of the S3 request in the gateway (median over the PUTs)",
        "steps": medians,
    }
    write_section("objectstore", "timeline_runs", section, append=True)
    print(json.dumps(section, indent=2))


if __name__ == "__main__":
    main()
