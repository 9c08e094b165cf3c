"""What a 4 KiB request costs the store's CPU, piece by piece, in this process (no HTTP).

The one-node benchmark (``python -m bench.objectstore``) gives the whole request's CPU per
operation, and beside it an aiohttp server that keeps bodies in memory (the HTTP layer's
own cost). This one times each piece a store request adds to that, alone, in a loop:

* SigV4: parse and verify a presigned URL (what every request pays);
* the body's digests: MD5 (the S3 ETag) and blake3 (the block's name) of 4 KiB;
* the block file: create, write, rename, stat (no fsync: that is I/O, see below), in a fresh
  store (nearly every block makes its fan-out directory) and with the directories there;
* its fsync (file and directory): wall time, mostly waiting on the disk;
* the rows: one fresh ``block_refs`` row and one object row (each a transaction with its
  hash-tree update), and the object row's read;
* the engine alone: a 4 KiB PUT and GET through ``Engine`` on one node (``LocalStore``),
  everything above but the HTTP layer and SigV4.

CPU is ``time.process_time`` (this process, every thread) per operation; each piece runs
``--count`` times (median of ``--repeat`` runs). Run from the repo root:
``python -m bench.objectstore.small_parts`` -> the ``small_parts`` section of
``bench/results/objectstore.json`` (the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import write_section
from bench.objectstore.__main__ import Target
from cloudless.lib.clock import SystemClock
from cloudless.objectstore.blocks import block_hash
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.node import Node
from cloudless.objectstore.records import OBJECTS, ObjectMeta
from cloudless.objectstore.s3 import sigv4
from cloudless.store.memory import MemoryStore

SIZE = 4096


def cpu_per_op(fn: Callable[[int], object], count: int) -> float:
    t = time.process_time()
    for i in range(count):
        fn(i)
    return (time.process_time() - t) / count * 1e6


async def acpu_per_op(fn: Callable[[int], Awaitable[Any]], count: int) -> float:
    t = time.process_time()
    for i in range(count):
        await fn(i)
    return (time.process_time() - t) / count * 1e6


def presigned(target: Target, method: str, key: str) -> sigv4.Request:
    """The request a client sends for ``target``'s presigned URL of ``key`` (bucket
    ``bench``), as the S3 front reads it."""
    rest = target.url(method, key).split("//", 1)[1].split("/", 1)[1]
    path, _, query = ("/" + rest).partition("?")
    return sigv4.Request(method, path, query, {"host": "127.0.0.1:9"})


async def measure(root: Path, count: int) -> dict[str, float]:
    clock = SystemClock()
    node = Node.open("bench", root / "node", MemoryStore(clock), clock)
    key = await node.iam.create_key("bench")
    await node.iam.create_bucket("bench", key.key_id)
    out: dict[str, float] = {}

    signer = Target("bench", 9, key.key_id, key.secret)
    reqs = [presigned(signer, "PUT", f"k{i}") for i in range(min(count, 200))]

    def sig(i: int) -> None:
        r = reqs[i % len(reqs)]
        p = sigv4.parse(r)
        assert p is not None
        sigv4.verify(r, p, key.secret, clock.now())

    out["sigv4 parse+verify (presigned)"] = cpu_per_op(sig, count)

    bodies = [os.urandom(SIZE) for _ in range(count)]
    out["md5 + blake3 of 4 KiB"] = cpu_per_op(
        lambda i: (hashlib.md5(bodies[i]).hexdigest(), block_hash(bodies[i])), count
    )
    hashes = [block_hash(b) for b in bodies]
    fresh = node.blocks
    out["block file, fresh store (mkdir as needed)"] = cpu_per_op(
        lambda i: fresh.write_sync(hashes[i], bodies[i], durable=False) and None, count
    )
    # the same fan-out directories, new files: the store once it holds ~100,000 blocks
    for h in hashes:
        fresh.path(h).unlink()
    out["block file, directories there"] = cpu_per_op(
        lambda i: fresh.write_sync(hashes[i], bodies[i], durable=False) and None, count
    )
    t = time.perf_counter()
    cpu = time.process_time()
    n_sync = min(count, 200)
    for h in hashes[:n_sync]:
        fresh.sync_sync([h])
    out["block fsync, file + directory (wall us)"] = (time.perf_counter() - t) / n_sync * 1e6
    out["block fsync, file + directory (cpu us)"] = (time.process_time() - cpu) / n_sync * 1e6

    local = node.engine.tables
    now = int(clock.now() * 1000)
    apply_many = local.apply_many  # type: ignore[attr-defined]
    out["row: block_refs, fresh (one transaction)"] = cpu_per_op(
        lambda i: (
            apply_many([("block_refs", f"{hashes[i]}/v{i}", i % 256, Entry(now, "bench", b"1"))])
            and None
        ),
        count,
    )
    meta = ObjectMeta(version="v", size=SIZE, etag="e" * 32, mtime=clock.now()).encode()
    out["row: object, new key (one transaction)"] = cpu_per_op(
        lambda i: apply_many([(OBJECTS, f"bench/o{i}", 7, Entry(now, "bench", meta))]) and None,
        count,
    )
    out["row: two rows in one transaction"] = cpu_per_op(
        lambda i: (
            apply_many(
                [
                    ("block_refs", f"{hashes[i]}/w{i}", i % 256, Entry(now, "bench", b"1")),
                    (OBJECTS, f"bench/p{i}", 7, Entry(now, "bench", meta)),
                ]
            )
            and None
        ),
        count,
    )
    rows = node.meta.table(OBJECTS)
    out["row: object read"] = cpu_per_op(lambda i: rows.entry(f"bench/o{i}") and None, count)

    async def body(data: bytes) -> Any:
        yield data

    engine = node.engine
    puts = [os.urandom(SIZE) for _ in range(count)]
    out["engine PUT 4 KiB (no HTTP, no SigV4; fsync included)"] = await acpu_per_op(
        lambda i: engine.put(
            "bench", f"e{i}", body(puts[i]), content_type="binary/octet-stream", user_meta={}
        ),
        count,
    )

    async def get(i: int) -> None:
        obj = await engine.head("bench", f"e{i}")
        assert obj is not None
        await engine.read_whole(obj, 0, obj.size)

    out["engine GET 4 KiB (no HTTP, no SigV4)"] = await acpu_per_op(get, count)
    node.meta.close()
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-small-parts-") as tmp:
            runs.append(asyncio.run(measure(Path(tmp), args.count)))
    figures = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    write_section(
        "objectstore",
        "small_parts",
        {
            "command": f"python -m bench.objectstore.small_parts --count {args.count}"
            f" --repeat {args.repeat}",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_average_1_5_15": os.getloadavg(),
            "unit": "CPU microseconds per operation (median of the runs), except the fsync's wall",
            "figures": figures,
            "every_run": runs,
        },
    )
    for k, v in figures.items():
        print(f"{k:58s} {v:>9}")


if __name__ == "__main__":
    main()
