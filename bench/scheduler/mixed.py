"""Mixed-fleet packing: phones (2 cores / 4 GiB), laptops (8 / 16), servers (32 / 128) and
small VPS (1 / 1) with random reliability and cost, loaded with random workload groups; the
packers' device count against the exact optimum (PuLP + CBC).

``instance(rng)`` is shared by the benchmark and the property tests."""

from __future__ import annotations

import random
from typing import Any

import pulp

from cloudless.model.node import Node
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.testing import node, spec

GI = 2**30
#: device class -> (millicores, GiB, weight in the fleet)
DEVICES = {
    "phone": (2000, 4, 0.35),
    "laptop": (8000, 16, 0.3),
    "server": (32000, 128, 0.1),
    "vps": (1000, 1, 0.25),
}
CPU = (100, 250, 500, 1000, 2000, 4000)
MEM_MI = (128, 256, 512, 1024, 2048, 4096)


def fleet(rng: random.Random, n: int) -> list[Node]:
    names = list(DEVICES)
    weights = [DEVICES[k][2] for k in names]
    out = []
    for i in range(n):
        kind = rng.choices(names, weights)[0]
        cpu, mem, _ = DEVICES[kind]
        out.append(
            node(
                f"n{i}",
                cpu=f"{cpu}m",
                memory=mem * GI,
                device_class=kind,
                reliability=round(rng.uniform(0.5, 1.0), 2),
                cost_per_hour=round(rng.uniform(0.1, 1.0), 2) if kind in ("server", "vps") else 0,
                zone=f"z{rng.randrange(3)}",
            )
        )
    return out


def instance(
    rng: random.Random, n_nodes: int | None = None
) -> tuple[list[Node], list[tuple[WorkloadSpec, int]]]:
    """A mixed fleet of 8..20 devices and workload groups asking for 30..70% of its cpu and
    memory (whichever binds first)."""
    nodes = fleet(rng, n_nodes or rng.randint(8, 20))
    cap_cpu = sum(x.allocatable.cpu_millis for x in nodes)
    cap_mem = sum(x.allocatable.memory_bytes for x in nodes)
    target = rng.uniform(0.3, 0.7)
    groups: list[tuple[WorkloadSpec, int]] = []
    cpu = mem = 0
    k = 0
    while cpu < target * cap_cpu and mem < target * cap_mem and k < 12:
        c, m = rng.choice(CPU), rng.choice(MEM_MI)
        cnt = rng.randint(1, 8)
        groups.append((spec(f"w{k}", cpu=f"{c}m", memory=f"{m}Mi"), cnt))
        cpu += c * cnt
        mem += m * 2**20 * cnt
        k += 1
    return nodes, groups


def optimal_nodes(
    nodes: list[Node], groups: list[tuple[WorkloadSpec, int]], time_limit: int = 20
) -> int | None:
    """Fewest nodes holding every replica (None if infeasible or not proved optimal)."""
    prob = pulp.LpProblem("binpack", pulp.LpMinimize)
    y = [pulp.LpVariable(f"y{j}", cat="Binary") for j in range(len(nodes))]
    x = {
        (w, j): pulp.LpVariable(f"x{w}_{j}", lowBound=0, upBound=c, cat="Integer")
        for w, (_, c) in enumerate(groups)
        for j in range(len(nodes))
    }
    prob += pulp.lpSum(y)
    for w, (_, c) in enumerate(groups):
        prob += pulp.lpSum(x[w, j] for j in range(len(nodes))) == c
    for j, n in enumerate(nodes):
        a = n.allocatable
        prob += (
            pulp.lpSum(x[w, j] * s.resources.cpu_millis for w, (s, _) in enumerate(groups))
            <= a.cpu_millis * y[j]
        )
        prob += (
            pulp.lpSum(
                x[w, j] * (s.resources.memory_bytes // 2**20) for w, (s, _) in enumerate(groups)
            )
            <= (a.memory_bytes // 2**20) * y[j]
        )
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    if pulp.LpStatus[status] != "Optimal":
        return None
    return round(pulp.value(prob.objective))


def mixed_packing(instances: int = 100, seed: int = 19) -> dict[str, Any]:
    from cloudless.scheduler import Snapshot, pack, pack_best_fit

    rng = random.Random(seed)
    ratios: dict[str, list[float]] = {"first_fit": [], "best_fit": []}
    incomplete = {"first_fit": 0, "best_fit": 0}
    worst: dict[str, dict[str, Any]] = {}
    solved = 0
    for i in range(instances):
        nodes, groups = instance(rng)
        opt = optimal_nodes(nodes, groups)
        if opt is None:
            continue
        solved += 1
        snap = Snapshot.build(nodes)
        for name, fn in (("first_fit", pack), ("best_fit", pack_best_fit)):
            plan = fn(snap, groups, rng=random.Random(i))
            if not plan.complete:
                incomplete[name] += 1
                continue
            ratio = len(plan.nodes_used()) / opt
            ratios[name].append(ratio)
            if ratio >= worst.get(name, {}).get("ratio", 0.0):
                worst[name] = {
                    "ratio": ratio,
                    "instance": i,
                    "used": len(plan.nodes_used()),
                    "optimal": opt,
                    "nodes": len(nodes),
                }
    return {
        "instances": instances,
        "solved_exactly": solved,
        "fleet": {k: {"millicores": c, "GiB": m} for k, (c, m, _) in DEVICES.items()},
        "solver": f"PuLP {pulp.__version__} + CBC",
        **{
            name: {
                "mean_ratio": sum(r) / len(r) if r else None,
                "worst": worst.get(name),
                "incomplete_plans": incomplete[name],
                "target_mean_ratio": 1.10,
            }
            for name, r in ratios.items()
        },
    }


if __name__ == "__main__":
    import json

    print(json.dumps(mixed_packing(60), indent=1))
