"""The object store as agents run it: three ``cloudless agent --storage`` processes and a
coordinator on loopback (``cloudless.objectstore.procs``), R=3 over three zones.

Measured, side by side in one run:

* PUT/GET 1 MiB (4 concurrent) through one agent's S3 endpoint at R=3, against the same
  workload on a one-node R=1 store, on the plain aiohttp file server of
  ``bench.objectstore`` and on the network-bound ideal of an R=3 PUT (a gateway that
  forwards each body to two mutual-TLS sinks storing nothing: every byte the PUT must move,
  no storage work), each in its own processes, alternating rounds;
* 4 KiB PUT/GET one at a time: P50 latency, against the P50 of one HTTP round trip on the
  same loopback (a GET of a 1-byte file from the baseline server), for the issue's
  "P50 <= 2 round trips + 5 ms";
* churn: an agent killed for less than the grace period while N MiB are written -> layout
  changes (must be 0) and the bytes of blocks it pulls on return (catch-up log) over the
  bytes written while it was away;
* a fourth agent joining zone z1 -> the bytes of blocks it pulls while syncing over the
  bytes of blocks it ends up holding, and the partitions every other node pulled (must be 0);
* an agent killed for good -> replaced after the grace period (60 s here); each new owner's
  pull rate (bytes over the time from the layout change to its synced log line) against the
  configured repair rate (``--storage-repair-rate 4Mi`` here, so the limit binds on
  loopback).

Run from the repo root: ``python -m bench.objectstore.cluster``; the figures go to the
``cluster`` section of ``bench/results/objectstore.json`` (the rest of the file is kept).
``--compare REF`` also runs commit REF's code (a second coordinator and three agents from
``git archive REF``) in the same rounds, for before/after figures side by side;
``--quick`` skips the churn steps and appends the run to ``cluster_runs`` instead.

``--link RATE`` (e.g. ``1gbit``) runs the whole benchmark in a network namespace of its own
whose loopback is shaped to RATE (``tc`` token bucket): one shared link that every byte of
every target crosses, as devices on one home LAN or Wi-Fi share its medium. On bare
loopback no target is network-bound: the "ideal" forwarder is bound by this machine's CPU,
which it spends on far less work than a store (no MD5, hashing, disk or metadata), so its
ratio there measures CPU, not the network. Shaped, the ideal moves 3 MiB over the link per
1 MiB PUT (client to gateway, gateway to two sinks) and an R=3 PUT the same 3 MiB plus its
metadata: the ratio says how close the store comes to what the link allows. Needs root
(``unshare --net``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import RESULTS, percentile
from bench.objectstore.__main__ import Target, drop_page_cache, list_keys, run, start
from bench.objectstore.servers import make_tls, run_baseline, run_fanout, run_sink, run_store

MIB = 1 << 20
ROUNDS = 3
LIST_KEYS = 1000
NOW = "cluster R=3"
IDEAL = "ideal R=3 fan-out"


def history(cluster: Any) -> Any:
    from cloudless.objectstore.layout_store import LayoutStore

    return cluster.with_etcd(lambda s: LayoutStore(s).show())


def log_lines(path: Path, pattern: str) -> list[re.Match[str]]:
    rx = re.compile(pattern)
    return [m for line in path.read_text().splitlines() if (m := rx.search(line))]


def s3_up(endpoint: str, key: Any) -> bool:
    import boto3  # type: ignore[import-untyped]

    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=key.key_id,
            aws_secret_access_key=key.secret,
            region_name="cloudless",
        ).list_buckets()
        return True
    except Exception:
        return False


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes used so far."""
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


async def throughput(
    targets: list[Target],
    put_only: frozenset[str] = frozenset(),
    pids: dict[str, list[int]] | None = None,
    root: str | Path = "",
) -> dict[str, dict[str, list[float]]]:
    """Rounds of every workload on every target; with ``pids`` (the processes serving a
    target), also the CPU they spent per MiB of 1 MiB PUTs; ``root``: the directory the
    targets keep their data under (dropped from the page cache after each turn)."""
    pids = pids or {}
    out: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        for rnd in range(ROUNDS):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for t in order:
                methods = ("PUT",) if t.name in put_only else ("PUT", "GET")
                keys = [f"r{rnd}-1m-{i}" for i in range(16)]
                bodies = [os.urandom(MIB) for _ in keys]
                for method in methods:
                    urls = [t.url(method, k) for k in keys]
                    procs = pids.get(t.name, [])
                    cpu = [cpu_seconds([p]) for p in procs]
                    elapsed, _ = await run(session, method, urls, bodies, 4)
                    out[t.name].setdefault(f"{method} 1MiB MiB/s", []).append(16 / elapsed)
                    if procs and method == "PUT":
                        each = [
                            (cpu_seconds([p]) - c) * 1000 / 16
                            for p, c in zip(procs, cpu, strict=True)
                        ]
                        out[t.name].setdefault("PUT 1MiB cpu ms/MiB", []).append(sum(each))
                        # the first process takes the PUTs (the gateway); the rest replicate
                        out[t.name].setdefault("PUT 1MiB cpu ms/MiB, first process", []).append(
                            each[0]
                        )
                keys = [f"r{rnd}-4k-{i}" for i in range(60)]
                bodies = [os.urandom(4096) for _ in keys]
                for method in methods:
                    urls = [t.url(method, k) for k in keys]
                    _, lat = await run(session, method, urls, bodies, 1)
                    out[t.name].setdefault(f"{method} 4KiB p50 ms", []).append(
                        percentile(lat, 50) * 1000
                    )
                if t.s3 is not None and t.name not in put_only:
                    # a listing of LIST_KEYS small objects (inline: heads only from each replica)
                    keys = [f"r{rnd}-list-{i:04d}" for i in range(LIST_KEYS)]
                    bodies = [os.urandom(4096) for _ in keys]
                    await run(session, "PUT", [t.url("PUT", k) for k in keys], bodies, 16)
                    await list_keys(session, t, f"r{rnd}-list-", LIST_KEYS, out[t.name])
                drop_page_cache(root)  # every turn starts with the same page cache (see there)
    return out


async def round_trip(base: Target) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.put(base.url("PUT", "rtt"), data=b"x") as r:
            await r.read()
        lat = []
        for _ in range(200):
            t = time.perf_counter()
            async with session.get(base.url("GET", "rtt")) as r:
                await r.read()
            lat.append(time.perf_counter() - t)
    return percentile(lat, 50) * 1000


def _ts(stamp: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(stamp).timestamp()


def parse_rate(size: str) -> float:
    from cloudless.model.resources import parse_size

    return float(parse_size(size))


def block_bytes(data: Path) -> int:
    root = data / "objectstore" / "blocks"
    return sum(p.stat().st_size for p in root.glob("??/??/*") if p.is_file())


def churn(cluster: Any, key: Any) -> dict[str, Any]:
    import boto3  # type: ignore[import-untyped]

    from cloudless.objectstore.procs import wait_for

    a1, _, a3 = cluster.agents
    c = boto3.client(
        "s3",
        endpoint_url=a1.s3,
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
        region_name="cloudless",
    )
    v_before = history(cluster).version()
    cluster.kill(2)
    written = 0
    for i in range(24):
        data = os.urandom(MIB if i % 3 else 100_000)
        c.put_object(Bucket="bench", Key=f"away/{i}", Body=data)
        written += len(data)
    cluster.start_agent(2)
    pattern = r"caught up: .* \((\d+) bytes\) pulled, (\d+) bytes moved in all"
    m = wait_for(lambda: log_lines(a3.log, pattern), "node-3 to catch up", 180)
    pulled = int(m[-1].group(1))
    moved_all = int(m[-1].group(2))
    v_after = history(cluster).version()

    # A fourth node joins zone z1.
    a4 = cluster.add("z1")
    wait_for(lambda: (a4.data / "identity" / "node.json").exists(), "node-4 to enroll")

    def synced() -> bool:
        h = history(cluster)
        return bool(h.current and a4.node_id in h.current.roles and len(h.versions) == 1)

    wait_for(synced, "node-4 synced", 300)
    sync_rx = r"layout v(\d+) synced: (\d+) partitions, \d+ rows, \d+ blocks \((\d+) bytes\)"
    m4 = wait_for(lambda: log_lines(a4.log, sync_rx), "node-4's sync log line", 60)
    moved = int(m4[-1].group(3))
    held = block_bytes(a4.data)
    version = m4[-1].group(1)
    others = {
        a.name: sum(int(x.group(2)) for x in log_lines(a.log, sync_rx) if x.group(1) == version)
        for a in cluster.agents[:3]
    }
    # node-2 gone for good: replaced past the grace period, its copies re-pulled at the
    # configured repair rate (per pulling node).
    a2 = cluster.agents[1]
    gone = a2.node_id
    cluster.kill(1)
    t_kill = time.monotonic()

    def replaced() -> bool:
        h = history(cluster)
        return bool(h.current and gone not in h.current.roles and len(h.versions) == 1)

    wait_for(replaced, "node-2 replaced and synced", 600)
    restored_after = time.monotonic() - t_kill
    rv = str(history(cluster).version())
    apply_rx = r"^(\S+) .*layout v(\d+) applied \(replace"
    applied = [m for a in cluster.agents for m in log_lines(a.log, apply_rx) if m.group(2) == rv]
    t0 = _ts(applied[0].group(1))
    pulls = []
    for a in cluster.agents:
        if a is a2:
            continue
        for m in log_lines(a.log, r"^(\S+) .*" + sync_rx):
            if m.group(2) == rv and int(m.group(4)) > 0:
                secs = max(1.0, _ts(m.group(1)) - t0)
                pulls.append({"node": a.name, "bytes": int(m.group(4)), "seconds": secs,
                              "MiB/s": round(int(m.group(4)) / MIB / secs, 2)})  # fmt: skip
    rate = parse_rate(cluster.repair_rate)
    best = max((p["bytes"] / p["seconds"] for p in pulls), default=0.0)
    return {
        "replacement": {
            "grace_s": cluster.grace_s,
            "kill_to_full_R_s": round(restored_after, 1),
            "repair_rate_configured_MiB/s": rate / MIB,
            "pulls": pulls,
            "fastest_pull_over_configured": round(best / rate, 2),
            "goal": "full R restored at >= 50% of the configured repair bandwidth",
            "met": best >= 0.5 * rate,
            "note": "per node, from the layout change to that node's synced line (1 s log "
            "resolution)",
        },
        "offline_below_grace": {
            "written_while_away_bytes": written,
            "catch_up_block_bytes": pulled,
            "catch_up_all_bytes": moved_all,
            "catch_up_over_written": round(moved_all / written, 3),
            "layout_changes": v_after - v_before,
            "goal": "0 layout changes, catch-up <= 1.1x the data written while away",
            "met": v_after == v_before and moved_all <= 1.1 * written,
            "note": "all bytes: tree comparisons, rows and blocks, both directions, JSON "
            "bodies (not HTTP/TLS framing)",
        },
        "node_added": {
            "pulled_block_bytes": moved,
            "holds_block_bytes": held,
            "pulled_over_held": round(moved / held, 3) if held else None,
            "partitions_pulled_by_other_nodes": others,
            "goal": "moves <= 1.1x what the new node holds, nothing between other nodes",
            "met": held > 0 and moved <= 1.1 * held and not any(others.values()),
        },
    }


def export(ref: str, dest: Path) -> str:
    """``ref``'s tree (a commit of this repository) under ``dest``; returns its short id."""
    root = Path(__file__).resolve().parents[2]
    dest.mkdir(parents=True)
    sha = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", ref],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", sha], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


def ideal(tmp: Path, procs: list[Any]) -> Target:
    """The network-bound ideal of an R=3 PUT (``servers.run_fanout``): a gateway that
    forwards each body to two mutual-TLS sinks and stores nothing; its three processes are
    appended to ``procs``."""
    tls = tmp / "tls"
    tls.mkdir()
    make_tls(tls, ["sink1", "sink2", "gateway"])
    ports = []
    for name in ("sink1", "sink2"):
        p, (port, _, _) = start(run_sink, str(tls / name))
        procs.append(p)
        ports.append(str(port))
    (tls / "fanout").mkdir()
    (tls / "fanout" / "sinks").write_text(" ".join(ports))
    p, (port, _, _) = start(run_fanout, str(tls / "fanout"))
    procs.append(p)
    return Target(IDEAL, port, "", "")


def old_cli_key(cluster: Any, source: Path) -> Any:
    """A key and the bucket ``bench`` made by ``source``'s own ``cloudless s3`` commands
    (which wrote to etcd directly before the user API took them over)."""
    from types import SimpleNamespace

    from cloudless.objectstore.procs import CLI

    env = {**os.environ, "PYTHONPATH": str(source)}
    where = ["--data-dir", str(cluster.base / "c"), "--endpoint", f"127.0.0.1:{cluster.etcd_port}"]

    def run(*args: str) -> str:
        return subprocess.run(
            [*CLI, "s3", *args, *where], cwd=source, env=env, check=True,
            capture_output=True, text=True,
        ).stdout  # fmt: skip

    lines = dict(
        line.split(":", 1) for line in run("key", "create", "bench").splitlines() if ":" in line
    )
    key = SimpleNamespace(
        key_id=lines["access key id"].strip(), secret=lines["secret access key"].strip()
    )
    run("bucket", "create", "bench", "--owner", key.key_id)
    return key


def start_cluster(base: Path, source: Path | None) -> tuple[Any, Any]:
    """A coordinator and three storage agents (R=3, zones z1-z3), a key and the bucket
    ``bench``; returns (cluster, key)."""
    from cloudless.objectstore.procs import StoreCluster

    base.mkdir(parents=True, exist_ok=True)
    cluster = StoreCluster(
        base, ["z1", "z2", "z3"], replication=3, grace_s=60, repair_rate="4Mi", source=source
    )
    cluster.start()
    try:
        return cluster, _ready(cluster, source)
    except BaseException:
        cluster.close()  # its processes too: nothing is left running
        raise


def _ready(cluster: Any, source: Path | None) -> Any:
    """The first layout, a key and the bucket ``bench``, every agent's S3 API up."""
    from cloudless.objectstore.procs import wait_for

    wait_for(lambda: history(cluster).current, "the first layout", 180)
    key = None
    if source is not None:  # an older commit: its own `cloudless s3` writes the key as its
        try:  # agents read it, if it predates the user API's key calls
            key = old_cli_key(cluster, source)
        except subprocess.CalledProcessError:
            key = None
    if key is None:  # through the API: the key stored sealed, opened for the nodes
        key = cluster.create_key("bench")
        cluster.create_bucket("bench", key.key_id)
    for a in cluster.agents:
        wait_for(functools.partial(s3_up, a.s3, key), f"{a.name}'s S3 API", 120)
    return key


SHAPED = "CLOUDLESS_BENCH_LINK"
"""Set in the re-executed benchmark: the rate its namespace's loopback is shaped to."""


def shaped_link(rate: str) -> None:
    """Bring up this (fresh) network namespace's loopback shaped to ``rate``: a token
    bucket whose burst holds a few 64 KiB loopback packets (a smaller one would stall
    them) and whose queue holds 50 ms at the rate."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
         "burst", "512kb", "latency", "50ms"],
        check=True,
    )  # fmt: skip


_RATE = re.compile(r"(\d+(?:\.\d+)?)([kmg])bit\Z")


def link_bits(rate: str) -> float:
    """Bits per second of a ``tc`` rate such as ``1gbit`` or ``500mbit`` (SI prefixes, as
    ``tc`` reads them); ``ValueError`` naming the accepted forms otherwise."""
    m = _RATE.match(rate.strip().lower())
    if m is None:
        raise ValueError(f"link rate {rate!r}: expected <number>kbit, mbit or gbit")
    return float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def link_use(ideal_mib_s: float, rate: str | None) -> dict[str, Any] | None:
    """How much of a shaped link the ideal kept busy (it moves 3 bytes over the link per
    byte PUT): near 1, the ideal is network-bound and the store's ratio to it is the goal's;
    well below, this machine's CPU bound the ideal first and the ratio is a CPU ratio."""
    if not rate:
        return None
    used = ideal_mib_s * 3 * MIB * 8 / link_bits(rate)
    return {"rate": rate, "fraction": round(used, 2), "network_bound": used >= 0.9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", metavar="REF", help="also run commit REF's code, side by side")
    ap.add_argument("--quick", action="store_true", help="throughput and latency only, no churn")
    ap.add_argument(
        "--link", metavar="RATE", help="run in a namespace whose loopback is shaped to RATE"
    )
    args = ap.parse_args()
    if args.link:
        try:
            link_bits(args.link)
        except ValueError as e:
            ap.error(str(e))
    if args.link and os.environ.get(SHAPED) != args.link:
        # again, in a network namespace of its own (it ends with the process)
        os.environ[SHAPED] = args.link
        argv = ["unshare", "--net", sys.executable, "-m", "bench.objectstore.cluster"]
        os.execvp("unshare", [*argv, *sys.argv[1:]])
    if args.link:
        shaped_link(args.link)
    with tempfile.TemporaryDirectory(prefix="bench-objectstore-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        procs: list[Any] = []
        clusters = []
        try:
            cluster, key = start_cluster(tmp / "now", None)
            clusters.append(cluster)
            targets = [Target(NOW, int(cluster.agents[0].s3_port), key.key_id, key.secret)]
            before = ""
            if args.compare:
                before = export(args.compare, tmp / "src")
                old, old_key = start_cluster(tmp / "before", tmp / "src")
                clusters.append(old)
                port = int(old.agents[0].s3_port)
                targets.append(Target(f"{NOW} at {before}", port, old_key.key_id, old_key.secret))
            p1, (port1, _, _) = start(run_baseline, f"{tmp}/baseline")
            procs.append(p1)
            p2, (port2, kid, secret) = start(run_store, f"{tmp}/store")
            procs.append(p2)
            base = Target("baseline", port1, "", "")
            one = Target("store R=1", port2, kid, secret)
            fan = ideal(tmp, procs)
            pids = {
                # the gateway first (``ideal`` started it after its two sinks)
                IDEAL: [p.pid for p in (procs[-1], *procs[-3:-1]) if p.pid is not None],
                "store R=1": [p2.pid] if p2.pid is not None else [],
                targets[0].name: [a.proc.pid for a in cluster.agents if a.proc is not None],
            }
            if args.compare:
                pids[targets[1].name] = [a.proc.pid for a in old.agents if a.proc is not None]
            load_before = os.getloadavg()
            raw = asyncio.run(throughput([base, one, fan, *targets], frozenset({IDEAL}), pids, tmp))
            rtt = asyncio.run(round_trip(base))
            load_mid = os.getloadavg()
            for c in clusters[1:]:
                c.close()
            del clusters[1:]
            churned = None if args.quick else churn(cluster, key)
            load_after = os.getloadavg()
        finally:
            for p in procs:
                p.kill()
                p.join(10)
            for c in clusters:
                c.close()
    fig = {n: {k: round(statistics.median(v), 2) for k, v in r.items()} for n, r in raw.items()}
    b, r1, ide = fig["baseline"], fig["store R=1"], fig[IDEAL]
    ratios: dict[str, float] = {}
    small: dict[str, Any] = {
        "round_trip_p50_ms": round(rtt, 2),
        "goal_p50_ms": round(2 * rtt + 5, 2),
    }
    for t in targets:
        r3 = fig[t.name]
        ratios[f"PUT 1MiB {t.name} / ideal"] = round(
            r3["PUT 1MiB MiB/s"] / ide["PUT 1MiB MiB/s"], 2
        )
        ratios[f"PUT 1MiB {t.name} / R=1"] = round(r3["PUT 1MiB MiB/s"] / r1["PUT 1MiB MiB/s"], 2)
        ratios[f"PUT 1MiB {t.name} / baseline"] = round(
            r3["PUT 1MiB MiB/s"] / b["PUT 1MiB MiB/s"], 2
        )
        ratios[f"GET 1MiB {t.name} / R=1"] = round(r3["GET 1MiB MiB/s"] / r1["GET 1MiB MiB/s"], 2)
        small[t.name] = {
            "PUT 4KiB p50 ms": r3["PUT 4KiB p50 ms"],
            "GET 4KiB p50 ms": r3["GET 4KiB p50 ms"],
            "met": max(r3["PUT 4KiB p50 ms"], r3["GET 4KiB p50 ms"]) <= 2 * rtt + 5,
            f"LIST {LIST_KEYS} keys ms": r3.get(f"LIST {LIST_KEYS} keys ms"),
        }
    cmd = "python -m bench.objectstore.cluster" + (" --quick" if args.quick else "")
    cmd += f" --compare {args.compare}" if args.compare else ""
    cmd += f" --link {args.link}" if args.link else ""
    link = (
        f"every process in one network namespace whose loopback is shaped to {args.link} "
        "(tc tbf: one link shared by all traffic)"
        if args.link
        else "loopback, unshaped"
    )
    section: dict[str, Any] = {
        "command": cmd,
        "link": link,
        "setup": "coordinator (embedded etcd) + 3 agents --storage 1Gi in zones z1-z3 on "
        "loopback, R=3, every one its own process (a second such cluster runs the compared "
        "commit's code); one-node R=1 store, aiohttp file server and the network-bound ideal "
        "(a gateway forwarding each body to two mutual-TLS sinks that store nothing) beside "
        f"them; median of {ROUNDS} alternating rounds; cpus={os.cpu_count()}",
        "load_average_1_5_15": {"before": load_before, "mid": load_mid, "after": load_after},
        "figures": fig,
        "every_round": {
            n: {k: [round(x, 2) for x in v] for k, v in r.items()} for n, r in raw.items()
        },
        "ratios": {**ratios, "goal": "R=3 PUT >= 0.8x the network-bound ideal"},
        "ideal_link_use": link_use(ide["PUT 1MiB MiB/s"], args.link),
        "small_objects": small,
    }
    if churned is not None:
        section["churn"] = churned
    out = RESULTS / "objectstore.json"
    payload: dict[str, Any] = (
        json.loads(out.read_text()) if out.exists() else {"suite": "objectstore"}
    )
    root = Path(__file__).resolve().parents[2]
    code = subprocess.run(
        ["git", "-C", str(root), "describe", "--always", "--dirty"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    stamped = {"when": when, "code": code, **section}
    if args.quick:
        payload.setdefault("cluster_runs", []).append(stamped)
    else:
        payload["cluster"] = stamped
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(section, indent=2))


if __name__ == "__main__":
    main()
