"""``python -m bench.enroll [--n 300] [--concurrency 16,64] [--repeat R]
[--baseline [NAME=]DIR ...]`` -> bench/results/enroll.json.

Enrollment throughput and latency against one real coordinator (see ``one.py``): for each
concurrency, a fresh coordinator and ``n`` real enrollments from one client process.

``--baseline DIR`` also measures another checkout of the repo (e.g. the commit before a change:
``git worktree add /tmp/enroll-old <commit>``), interleaved with this tree's runs in one
invocation, so that the two are compared side by side on the same (noisy, 2-core) machine;
the report gives the ratio this/baseline per concurrency. The baseline checkout needs no copy
of this benchmark: ``bench/enroll`` is copied into it.

``--baseline`` may be given several times (``NAME=DIR``; plain ``DIR`` is named "baseline"),
e.g. the old commit and the old commit plus only the client-side change, to tell the client's
share of a gain from the coordinator's; ratios are given against each.

``--repeat R`` measures each (tree, concurrency) R times, rotating which tree goes first,
and reports the median run (by enrollments/s) with every run kept; the 1-minute load average
before each run is recorded, since other work on the machine moves these figures a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import write_results

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def measure(tree: Path, n: int, concurrency: int) -> dict[str, Any]:
    """Run ``bench.enroll.one`` with ``tree`` as the working directory (its code, both sides)."""
    dst = tree / "bench" / "enroll"
    if tree != REPO:  # the same measurement code on both sides
        shutil.copytree(HERE, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    cmd = [sys.executable, "-m", "bench.enroll.one", "--n", str(n)]
    cmd += ["--concurrency", str(concurrency)]
    out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"bench.enroll.one in {tree} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if not str(result.get("code", "")).startswith(str(tree)):
        raise RuntimeError(f"measured {result.get('code')}, not the code in {tree}")
    return result


def ratio(runs: dict[str, dict[str, Any]], base: str, c: int, key: str) -> float:
    return round(float(runs["this"][str(c)][key]) / max(float(runs[base][str(c)][key]), 1e-9), 2)


def median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rs, key=lambda r: float(r["enrollments_per_s"]))[len(rs) // 2]


def commit_of(tree: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", default="16,64")
    ap.add_argument("--baseline", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    trees = {"this": REPO}
    for b in a.baseline:
        name, _, path = b.rpartition("=")
        trees[name or "baseline"] = Path(path).resolve()
    every: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {str(c): [] for c in levels} for name in trees
    }
    for c in levels:
        for i in range(a.repeat):
            order = list(trees.items())
            for name, tree in order[i % len(order) :] + order[: i % len(order)]:
                load = os.getloadavg()[0]
                r = measure(tree, a.n, c)
                r["loadavg_1m_before"] = round(load, 2)
                every[name][str(c)].append(r)
                print(
                    f"{name:8s} c={c:3d}: {r['enrollments_per_s']:7.2f}/s  "
                    f"P50 {r['p50_ms']:7.1f} ms  P95 {r['p95_ms']:7.1f} ms  "
                    f"errors {r['errors']}  coordinator CPU {r['coordinator_cpu_s']} s  "
                    f"load {load:.1f}",
                    flush=True,
                )
    runs = {name: {c: median_run(rs) for c, rs in by_c.items()} for name, by_c in every.items()}
    data: dict[str, Any] = {
        "n": a.n,
        "repeat": a.repeat,
        "commits": {name: commit_of(tree) for name, tree in trees.items()},
        "runs": runs,
        "all_runs": every,
    }
    for base in [t for t in trees if t != "this"]:
        data[f"ratio_this_over_{base}"] = ratios = {
            str(c): {
                "enrollments_per_s": ratio(runs, base, c, "enrollments_per_s"),
                "p50": ratio(runs, base, c, "p50_ms"),
                "p95": ratio(runs, base, c, "p95_ms"),
                "coordinator_cpu_s": ratio(runs, base, c, "coordinator_cpu_s"),
            }
            for c in levels
        }
        print(f"this / {base}: {json.dumps(ratios)}")
    write_results("enroll", data)


if __name__ == "__main__":
    main()
