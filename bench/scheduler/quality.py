"""Packing quality: greedy packers against the optimal node count from an exact ILP (PuLP +
CBC), on small random instances; and spread evenness whenever an even spread is feasible."""

from __future__ import annotations

import random
from typing import Any

import pulp

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Snapshot, pack, pack_best_fit, pack_with_spread
from cloudless.scheduler.testing import node, spec

NODE_SHAPES = ((2000, 4), (4000, 8), (8000, 16), (4000, 16), (8000, 8))  # (millicores, GiB)
GI = 2**30


def _instance(rng: random.Random, mixed: bool) -> tuple[list[Any], list[tuple[WorkloadSpec, int]]]:
    groups = []
    total = [0, 0]
    left = rng.randint(8, 40)
    k = 0
    while left > 0:
        c = min(left, rng.randint(1, 15))
        cpu = rng.choice((250, 500, 750, 1000, 1500, 2000))
        mem = rng.choice((256, 512, 1024, 1536, 2048, 3072))
        groups.append((spec(f"w{k}", cpu=f"{cpu}m", memory=f"{mem}Mi"), c))
        total[0] += cpu * c
        total[1] += mem * (2**20) * c
        left -= c
        k += 1
    shapes = NODE_SHAPES if mixed else (rng.choice(NODE_SHAPES[1:3]),)
    nodes: list[Any] = []
    cap = [0, 0]
    while (cap[0] < total[0] * 1.4 or cap[1] < total[1] * 1.4) and len(nodes) < 15:
        c, m = rng.choice(shapes)
        nodes.append(node(f"n{len(nodes)}", cpu=f"{c}m", memory=m * GI))
        cap[0] += c
        cap[1] += m * GI
    return nodes, groups


def optimal_nodes(nodes: list[Any], groups: list[tuple[WorkloadSpec, int]]) -> int | None:
    """Fewest nodes that hold every replica (None if infeasible or not solved)."""
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
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=30))
    if pulp.LpStatus[status] != "Optimal":
        return None
    return round(pulp.value(prob.objective))


def packing_quality(instances: int = 200, seed: int = 11) -> dict[str, Any]:
    rng = random.Random(seed)
    ratios: dict[str, list[float]] = {"first_fit": [], "best_fit": []}
    failures = {"first_fit": 0, "best_fit": 0}
    worst: dict[str, dict[str, Any]] = {}
    solved = 0
    for i in range(instances):
        nodes, groups = _instance(rng, mixed=i % 2 == 1)
        opt = optimal_nodes(nodes, groups)
        if opt is None:
            continue
        solved += 1
        snap = Snapshot.build(nodes)
        for name, fn in (("first_fit", pack), ("best_fit", pack_best_fit)):
            plan = fn(snap, groups, rng=random.Random(i))
            if not plan.complete:
                failures[name] += 1
                continue
            ratio = len(plan.nodes_used()) / opt
            ratios[name].append(ratio)
            if ratio >= worst.get(name, {}).get("ratio", 0.0):
                worst[name] = {
                    "ratio": ratio,
                    "instance": i,
                    "used": len(plan.nodes_used()),
                    "optimal": opt,
                    "replicas": sum(c for _, c in groups),
                    "nodes": len(nodes),
                }
    return {
        "instances": instances,
        "solved_exactly": solved,
        "solver": f"PuLP {pulp.__version__} + CBC",
        **{
            name: {
                "mean_ratio": sum(r) / len(r) if r else None,
                "worst": worst.get(name),
                "incomplete_plans": failures[name],
                "target_mean_ratio": 1.10,
            }
            for name, r in ratios.items()
        },
    }


def spread_feasible(caps: list[tuple[int, int]], count: int, zones: int) -> bool:
    """Whether ``count`` replicas fit with zone counts differing by at most 1.
    ``caps``: (zone, how many replicas the node holds)."""
    per_zone = [sum(c for z, c in caps if z == k) for k in range(zones)]
    base, extra = divmod(count, zones)
    # an even spread gives `extra` zones base+1 and the rest base; put the +1 on the roomiest
    need = sorted([base + 1] * extra + [base] * (zones - extra), reverse=True)
    return all(a >= b for a, b in zip(sorted(per_zone, reverse=True), need, strict=True))


def spread_quality(instances: int = 200, seed: int = 12) -> dict[str, Any]:
    rng = random.Random(seed)
    feasible = violations = 0
    worst_skew = 0
    for i in range(instances):
        zones = 3
        nodes = []
        caps = []
        for j in range(rng.randint(3, 15)):
            z = j % zones if j < zones else rng.randrange(zones)
            cpu = rng.choice((1000, 2000, 4000))
            nodes.append(node(f"n{j}", cpu=f"{cpu}m", memory="16Gi", zone=f"z{z}"))
            caps.append((z, cpu // 500))
        count = rng.randint(3, 40)
        s = spec("s", cpu="500m", memory="256Mi")
        plan = pack_with_spread(Snapshot.build(nodes), s, count, rng=random.Random(i))
        if not spread_feasible(caps, count, zones):
            continue
        feasible += 1
        per = [0] * zones
        for a in plan.assignments:
            per[int(nodes[int(a.node_id[1:])].zone[1:])] += 1
        skew = max(per) - min(per)
        worst_skew = max(worst_skew, skew)
        if skew > 1 or not plan.complete:
            violations += 1
    return {
        "instances": instances,
        "even_spread_feasible": feasible,
        "violations": violations,
        "worst_skew_when_feasible": worst_skew,
    }
