"""``python -m bench.policy [--n N]`` -> bench/results/policy.json.

CEL admission policy cost, and the measurement behind the engine choice. For the same six
policies over the same workload spec and user (the examples in docs/security.md), with
``cel-python`` (``celpy``, pure Python) and ``common-expression-language`` (``cel``, Rust):

* compile time per expression (each compiled once per policy version in the product);
* evaluation time per policy per request with the request's context already built
  (the figure the goal, P99 <= 50 us per policy per request, is about);
* building the per-request context (converting the spec and user once, shared by every
  policy evaluated on the request);
* the product path, ``admission.admit`` over all six policies, per request and per policy;
* ``rbac.decide`` (the role check every API request makes), for comparison.

The machine's load average is recorded with the figures: the box is shared, and wall-clock
tails move with it; the ``*_cpu`` figures (this thread's CPU time per call) do not count the
time the process waited for a core.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any

import cel
import celpy

from bench.common import RESULTS, percentile, write_results
from cloudless.model.workload_codec import parse_workload_data, workload_to_dict
from cloudless.policy.admission import admit, parse_policy, request_variables

EXPRESSIONS = {
    "registries": '["registry.local/", "127.0.0.1:5000/"].exists(r, object.image.startsWith(r))',
    "no-host-network": '!("host-network" in object.labels) || '
    'object.labels["host-network"] != "true"',
    "memory-ceiling": 'object.namespace != "web" || object.resources.memory <= 512 * 1024 * 1024',
    "required-labels": '["team", "app"].all(k, k in object.labels)',
    "owned-devices": 'user.role == "admin" || object.placement.node_selector.exists(e, '
    'e.key == "owner" && e.values == [user.name])',
    "replica-cap": 'user.role == "admin" || object.replicas <= 10',
}
SPEC = {
    "name": "shop",
    "namespace": "web",
    "image": "registry.local/shop:1.4",
    "command": ["/bin/shop", "--port", "8080"],
    "env": {"MODE": "prod", "LOG": "info"},
    "labels": {"team": "payments", "app": "shop"},
    "resources": {"cpu": "500m", "memory": "256Mi"},
    "replicas": 3,
    "ports": [8080],
    "placement": {"node_selector": [{"key": "owner", "operator": "in", "values": ["dana"]}]},
}
USER = {"name": "dana", "role": "developer", "namespaces": ["web"]}


def _us(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": round(percentile(samples, 50) * 1e6, 2),
        "p95_us": round(percentile(samples, 95) * 1e6, 2),
        "p99_us": round(percentile(samples, 99) * 1e6, 2),
        "samples": len(samples),
    }


def _timed(fn: Callable[[], object], n: int, cpu: list[float] | None = None) -> list[float]:
    """Wall time per call; with ``cpu``, this thread's CPU time per call appended there too
    (the figure that does not move when other processes take the cores)."""
    out = []
    for _ in range(n):
        c = time.thread_time()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)
    return out


def bench_cel(obj: dict[str, Any], n: int) -> dict[str, Any]:
    compile_s: list[float] = []
    programs = {}
    for name, src in EXPRESSIONS.items():
        t = time.perf_counter()
        programs[name] = cel.compile(src)
        compile_s.append(time.perf_counter() - t)
    variables = request_variables(obj, USER)
    ctx = cel.Context(variables)
    per: list[float] = []
    per_cpu: list[float] = []
    by_policy = {}
    for name, prg in programs.items():
        assert prg.execute(ctx) is True, name
        samples = _timed(lambda prg=prg: prg.execute(ctx), n, per_cpu)
        by_policy[name] = _us(samples)
        per += samples
    return {
        "compile": _us(compile_s),
        "eval_per_policy": _us(per),
        "eval_per_policy_cpu": _us(per_cpu),
        "eval_by_policy": by_policy,
        "context_per_request": _us(_timed(lambda: cel.Context(variables), n)),
    }


def bench_celpy(obj: dict[str, Any], n: int) -> dict[str, Any]:
    env = celpy.Environment()
    compile_s: list[float] = []
    programs = {}
    for name, src in EXPRESSIONS.items():
        t = time.perf_counter()
        programs[name] = env.program(env.compile(src))
        compile_s.append(time.perf_counter() - t)
    variables = request_variables(obj, USER)

    def activation() -> dict[str, Any]:
        return {k: celpy.json_to_cel(v) for k, v in variables.items()}

    act = activation()
    per: list[float] = []
    by_policy = {}
    for name, prg in programs.items():
        assert bool(prg.evaluate(act)) is True, name
        samples = _timed(lambda prg=prg: prg.evaluate(act), n)
        by_policy[name] = _us(samples)
        per += samples
    return {
        "compile": _us(compile_s),
        "eval_per_policy": _us(per),
        "eval_by_policy": by_policy,
        "context_per_request": _us(_timed(activation, n)),
    }


def bench_admit(obj: dict[str, Any], n: int) -> dict[str, Any]:
    policies = [
        parse_policy({"name": k, "validations": [{"expression": v}]})
        for k, v in EXPRESSIONS.items()
    ]
    variables = request_variables(obj, USER)
    assert admit(policies, variables).allowed
    cpu: list[float] = []
    whole = _timed(lambda: admit(policies, variables), n, cpu)
    spec = parse_workload_data(SPEC)
    with_dict = _timed(lambda: admit(policies, request_variables(workload_to_dict(spec), USER)), n)
    k = len(policies)
    return {
        "policies": k,
        "per_request": _us(whole),
        "per_policy": _us([s / k for s in whole]),
        "per_request_cpu": _us(cpu),
        "per_policy_cpu": _us([s / k for s in cpu]),
        "per_request_incl_spec_to_dict": _us(with_dict),
    }


def bench_rbac(n: int) -> dict[str, Any]:
    """``rbac.decide`` per request (pure; the store reads around it are not included)."""
    from cloudless.policy.rbac import BUILTIN_ROLES, AccessRequest, User, decide

    dev = User("dana", "developer", ("web", "shop"))
    reqs = [
        AccessRequest("create", "workloads", "web", "shop"),
        AccessRequest("create", "workloads", "default", "x"),
        AccessRequest("delete", "nodes", "", "n1"),
    ]
    role = BUILTIN_ROLES["developer"]
    return {r.describe(): _us(_timed(lambda r=r: decide(dev, role, r), n)) for r in reqs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000, help="evaluations per policy (cel)")
    ap.add_argument("--n-celpy", type=int, default=300, help="evaluations per policy (celpy)")
    args = ap.parse_args()
    obj = workload_to_dict(parse_workload_data(SPEC))
    load_before = os.getloadavg()
    gc.collect()
    results = {
        "goal": "P99 <= 50 us per policy per request",
        "engines": {
            "common-expression-language": {
                "version": "0.10.0",
                **bench_cel(obj, args.n),
            },
            "cel-python": {"version": "0.5.0", **bench_celpy(obj, args.n_celpy)},
        },
        "chosen": "common-expression-language",
        "admit": bench_admit(obj, args.n),
        "rbac_decide": bench_rbac(args.n),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "cores": os.cpu_count(),
    }
    a = results["admit"]
    print(
        f"admit: {a['policies']} policies, per request p50 {a['per_request']['p50_us']} us "
        f"p99 {a['per_request']['p99_us']} us; per policy p99 {a['per_policy']['p99_us']} us "
        f"(CPU time: per policy p99 {a['per_policy_cpu']['p99_us']} us)"
    )
    for name, e in results["engines"].items():
        print(
            f"{name}: compile p50 {e['compile']['p50_us']} us, eval/policy p50 "
            f"{e['eval_per_policy']['p50_us']} p99 {e['eval_per_policy']['p99_us']} us, "
            f"context p50 {e['context_per_request']['p50_us']} us"
        )
    # Figures other benchmarks merge into the same file (side-by-side comparisons, the CA
    # rotation time) are kept.
    path = RESULTS / "policy.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    for k in ("suite", "when", "machine", *results):
        kept.pop(k, None)
    write_results("policy", {**results, **kept})


if __name__ == "__main__":
    main()
