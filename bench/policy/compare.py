"""``python -m bench.policy.compare [--before REV] [--n N] [--rounds R]``

``admission.admit`` as it is now against ``cloudless/policy/admission.py`` at git revision
``REV`` (default: the revision before the change that cut the CPU-clock reads and planned the
field cuts once), side by side: the two are called alternately, request by request, over the
same six policies and request as ``bench.policy``, so the machine's load hits both alike.
Each round records per-request wall and CPU-time percentiles and the amortised per-policy
figures; the JSON goes into ``bench/results/policy.json`` under ``admit_before_after`` (the
other figures there are kept).
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

BEFORE = "c6eca01"  # admission.py before "read the CPU clock twice per request"


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
    variables = admission.request_variables(obj, USER)
    k = len(EXPRESSIONS)
    rounds = []
    for r in range(a.rounds):
        wall: dict[str, list[float]] = {n: [] for n in impls}
        cpu: dict[str, list[float]] = {n: [] for n in impls}
        for name, m in impls.items():  # warm up
            for _ in range(500):
                assert m.admit(pols[name], variables).allowed
        load = os.getloadavg()[0]
        for _ in range(a.n):
            for name, m in impls.items():
                c = time.thread_time()
                t = time.perf_counter()
                m.admit(pols[name], variables)
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.thread_time() - c)
        row: dict[str, Any] = {"round": r, "load_average_1m": round(load, 2)}
        for name in impls:
            row[name] = {"wall": _stats(wall[name], k), "cpu": _stats(cpu[name], k)}
        row["after_over_before_cpu_p99"] = round(
            percentile(cpu["after"], 99) / percentile(cpu["before"], 99), 3
        )
        row["after_over_before_cpu_p50"] = round(
            percentile(cpu["after"], 50) / percentile(cpu["before"], 50), 3
        )
        print(json.dumps(row), flush=True)
        rounds.append(row)
    path = RESULTS / "policy.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    for key in ("suite", "when", "machine"):
        existing.pop(key, None)
    existing["admit_before_after"] = {
        "before_revision": a.before,
        "policies": k,
        "requests_per_round": a.n,
        "rounds": rounds,
    }
    write_results("policy", existing)


if __name__ == "__main__":
    main()
