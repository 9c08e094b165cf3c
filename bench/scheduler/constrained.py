"""Plans with placement constraints on mixed fleets: does the scheduler leave replicas
unplaced when a full placement exists? The exact answer comes from a feasibility ILP (PuLP +
CBC) over the same rules: selectors, required (anti-)affinity between workloads on node or
zone, one replica per node (required anti-affinity to itself), all replicas in one node or
zone (required affinity to itself).

``instance(rng, n_nodes)`` and ``feasible(nodes, groups)`` are shared with the property
tests."""

from __future__ import annotations

import random
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pulp

from bench.scheduler.mixed import CPU, MEM_MI, fleet
from cloudless.model.node import Node
from cloudless.model.workload import WorkloadAffinity, WorkloadSpec
from cloudless.scheduler.testing import sel, spec


def instance(
    rng: random.Random, n_nodes: int | None = None
) -> tuple[list[Node], list[tuple[WorkloadSpec, int]]]:
    """A mixed fleet (8..50 devices, ~1 in 4 labelled ssd) and 2..8 workload groups, about a
    third of them constrained."""
    n = n_nodes or rng.randint(8, 50)
    nodes = []
    for x in fleet(rng, n):
        if rng.random() < 0.25:
            x = replace(x, labels=MappingProxyType({**x.labels, "ssd": "true"}))
        nodes.append(x)
    k = rng.randint(2, 8)
    names = [f"w{i}" for i in range(k)]
    groups = []
    for name in names:
        kw: dict[str, Any] = {}
        terms: list[WorkloadAffinity] = []
        roll = rng.random()
        if roll < 0.2:
            kw["node_selector"] = (sel("ssd", "exists"),)
        elif roll < 0.35:
            other = rng.choice([m for m in names if m != name])
            terms.append(WorkloadAffinity(other, rng.choice(("node", "zone")), anti=True))
        elif roll < 0.5:
            terms.append(WorkloadAffinity(name, "node", anti=True))
        elif roll < 0.62:
            terms.append(WorkloadAffinity(name, rng.choice(("node", "zone"))))
        if rng.random() < 0.15 and not terms:
            other = rng.choice([m for m in names if m != name])
            terms.append(WorkloadAffinity(other, "node", anti=True))
        kw["required_workload_affinity"] = tuple(terms)
        cnt = rng.randint(1, 6)
        s = spec(name, cpu=f"{rng.choice(CPU)}m", memory=f"{rng.choice(MEM_MI)}Mi", **kw)
        groups.append((s, cnt))
    return nodes, groups


def feasible(
    nodes: list[Node], groups: list[tuple[WorkloadSpec, int]], time_limit: int = 20
) -> bool | None:
    """Whether every replica can be placed under the rules (None if CBC gave no answer)."""
    prob = pulp.LpProblem("feasible", pulp.LpMinimize)
    J = range(len(nodes))
    zones = sorted({x.label("zone") or "" for x in nodes})
    x: dict[tuple[int, int], Any] = {}
    z: dict[tuple[int, int], Any] = {}
    zd: dict[tuple[int, str], Any] = {}
    idx = {s.name: w for w, (s, _) in enumerate(groups)}
    for w, (s, c) in enumerate(groups):
        for j in J:
            ok = all(e.matches(nodes[j]) for e in s.placement.node_selector)
            x[w, j] = pulp.LpVariable(f"x{w}_{j}", 0, c if ok else 0, cat="Integer")
            z[w, j] = pulp.LpVariable(f"z{w}_{j}", cat="Binary")
            prob += x[w, j] <= c * z[w, j]
        for d in zones:
            zd[w, d] = pulp.LpVariable(f"zd{w}_{d}", cat="Binary")
            for j in J:
                if (nodes[j].label("zone") or "") == d:
                    prob += z[w, j] <= zd[w, d]
        prob += pulp.lpSum(x[w, j] for j in J) == c
    prob += pulp.lpSum(z.values())
    for j, n in enumerate(nodes):
        a = n.allocatable
        prob += pulp.lpSum(x[w, j] * s.resources.cpu_millis for w, (s, _) in enumerate(groups)) <= (
            a.cpu_millis
        )
        prob += pulp.lpSum(
            x[w, j] * (s.resources.memory_bytes // 2**20) for w, (s, _) in enumerate(groups)
        ) <= (a.memory_bytes // 2**20)
    for w, (s, _) in enumerate(groups):
        for t in s.placement.required_workload_affinity:
            if t.workload == s.name:
                if t.anti and t.topology_key == "node":
                    for j in J:
                        prob += x[w, j] <= 1
                elif not t.anti and t.topology_key == "node":
                    prob += pulp.lpSum(z[w, j] for j in J) <= 1
                elif not t.anti:
                    prob += pulp.lpSum(zd[w, d] for d in zones) <= 1
                continue
            o = idx.get(t.workload)
            if o is None:
                continue
            if t.anti and t.topology_key == "node":
                for j in J:
                    prob += z[w, j] + z[o, j] <= 1
            elif t.anti:
                for d in zones:
                    prob += zd[w, d] + zd[o, d] <= 1
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit))
    name = pulp.LpStatus[status]
    if name == "Optimal":
        return True
    if name == "Infeasible":
        return False
    return None


def constrained_quality(instances: int = 200, seed: int = 23) -> dict[str, Any]:
    from cloudless.scheduler import Scheduler, Snapshot, Strategy

    rng = random.Random(seed)
    out: dict[str, Any] = {"instances": instances, "max_nodes": 50}
    stuck = {s.value: 0 for s in Strategy}
    examples: dict[str, list[int]] = {s.value: [] for s in Strategy}
    n_feasible = 0
    for i in range(instances):
        nodes, groups = instance(rng)
        if not feasible(nodes, groups):
            continue
        n_feasible += 1
        snap = Snapshot.build(nodes)
        for st in Strategy:
            plan = Scheduler(rng=random.Random(i)).schedule_many(snap, groups, strategy=st)
            if not plan.complete:
                stuck[st.value] += 1
                examples[st.value].append(i)
    out["feasible"] = n_feasible
    out["incomplete_although_feasible"] = stuck
    out["examples"] = {k: v[:5] for k, v in examples.items()}
    out["solver"] = f"PuLP {pulp.__version__} + CBC"
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(constrained_quality(200), indent=1))
