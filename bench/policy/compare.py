"""``python -m bench.policy.compare [--before REV] [--n N] [--rounds R] [--key KEY]``

``admission.admit`` as it is now against ``cloudless/policy/admission.py`` at git revision
``REV`` (default: the revision before the request contexts were cached), side by side: the
two are called alternately, request by request, over the same six policies as
``bench.policy``, so the machine's load hits both alike. Two kinds of traffic, each round:

* ``repeat``: the same request every time (``bench.policy``'s spec and user): after the
  first, the current code finds its context in the cache;
* ``distinct``: every request a different spec (its image tag, which a policy reads, numbered
  by the request): the current code never finds a context and converts each request, as
  the revision before did.

Each records per-request wall and CPU-time percentiles and the amortised per-policy figures;
the JSON goes into ``bench/results/policy.json`` under ``KEY`` (default
``admit_context_cache``; the other figures there are kept).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, percentile, write_results
from bench.policy.__main__ import EXPRESSIONS, SPEC, USER
from cloudless.model.workload_codec import parse_workload_data, workload_to_dict
from cloudless.policy import admission

BEFORE = "f92d7b6"  # admission.py before the request contexts were cached


def _load(rev: str) -> Any:
    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(
        ["git", "show", f"{rev}:cloudless/policy/admission.py"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    d = Path(tempfile.mkdtemp(prefix="cl18-admission-"))
    (d / "admission_before.py").write_bytes(src)
    spec = importlib.util.spec_from_file_location("admission_before", d / "admission_before.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["admission_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _stats(samples: list[float], k: int) -> dict[str, float]:
    def us(p: float, per: int = 1) -> float:
        return round(percentile(samples, p) / per * 1e6, 2)

    return {
        "per_request_p50_us": us(50),
        "per_request_p99_us": us(99),
        "per_policy_p50_us": us(50, k),
        "per_policy_p95_us": us(95, k),
        "per_policy_p99_us": us(99, k),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=BEFORE)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--key", default="admit_context_cache")
    a = p.parse_args()
    old = _load(a.before)
    obj = workload_to_dict(parse_workload_data(SPEC))
    impls = {"before": old, "after": admission}
    pols = {
        name: [
            m.parse_policy({"name": k, "validations": [{"expression": v}]})
            for k, v in EXPRESSIONS.items()
        ]
        for name, m in impls.items()
    }
    k = len(EXPRESSIONS)
    traffic = {
        "repeat": [admission.request_variables(obj, USER)] * a.n,
        "distinct": [
            admission.request_variables({**obj, "image": f"{obj['image']}-{i}"}, USER)
            for i in range(a.n)
        ],
    }
    rounds = []
    for r in range(a.rounds):
        row: dict[str, Any] = {"round": r}
        for kind, requests in traffic.items():
            wall: dict[str, list[float]] = {n: [] for n in impls}
            cpu: dict[str, list[float]] = {n: [] for n in impls}
            for name, m in impls.items():  # warm up (other specs than the measured ones)
                for i in range(500):
                    warm = {**obj, "image": f"{obj['image']}-warm{i}"}
                    assert m.admit(pols[name], admission.request_variables(warm, USER)).allowed
            load = os.getloadavg()[0]
            for variables in requests:
                for name, m in impls.items():
                    c = time.thread_time()
                    t = time.perf_counter()
                    m.admit(pols[name], variables)
                    wall[name].append(time.perf_counter() - t)
                    cpu[name].append(time.thread_time() - c)
            part: dict[str, Any] = {"load_average_1m": round(load, 2)}
            for name in impls:
                part[name] = {"wall": _stats(wall[name], k), "cpu": _stats(cpu[name], k)}
            for pct in (50, 99):
                part[f"after_over_before_cpu_p{pct}"] = round(
                    percentile(cpu["after"], pct) / percentile(cpu["before"], pct), 3
                )
            row[kind] = part
        print(json.dumps(row), flush=True)
        rounds.append(row)
    path = RESULTS / "policy.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    for key in ("suite", "when", "machine"):
        existing.pop(key, None)
    existing[a.key] = {
        "before_revision": a.before,
        "policies": k,
        "requests_per_round": a.n,
        "rounds": rounds,
    }
    write_results("policy", existing)


if __name__ == "__main__":
    main()
