"""An exact oracle for layout movement: the fewest new partition copies any valid layout with
the same per-node counts needs (an integer program solved by CBC through pulp)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pulp

from cloudless.objectstore.layout import PARTITIONS, NodeRole


def optimal_moves(
    roles: Mapping[str, NodeRole],
    replication: int,
    previous: Sequence[Sequence[str]],
    counts: Mapping[str, int],
    redundancy: int,
) -> int:
    nodes = sorted(counts)
    zones = sorted({roles[n].zone for n in nodes})
    per_zone = replication - redundancy + 1
    prob = pulp.LpProblem("layout", pulp.LpMinimize)
    x = {
        (p, n): pulp.LpVariable(f"x_{p}_{n}", cat="Binary")
        for p in range(PARTITIONS)
        for n in nodes
    }
    y = {
        (p, z): pulp.LpVariable(f"y_{p}_{z}", cat="Binary")
        for p in range(PARTITIONS)
        for z in zones
    }
    kept = {(p, n) for p, ns in enumerate(previous) for n in ns}
    prob += pulp.lpSum(v for k, v in x.items() if k not in kept)
    for p in range(PARTITIONS):
        prob += pulp.lpSum(x[p, n] for n in nodes) == replication
        for z in zones:
            in_zone = [x[p, n] for n in nodes if roles[n].zone == z]
            prob += pulp.lpSum(in_zone) <= per_zone
            prob += y[p, z] <= pulp.lpSum(in_zone)
        prob += pulp.lpSum(y[p, z] for z in zones) >= redundancy
    for n in nodes:
        prob += pulp.lpSum(x[p, n] for p in range(PARTITIONS)) == counts[n]
    prob.solve(pulp.PULP_CBC_CMD(msg=0))
    if pulp.LpStatus[prob.status] != "Optimal":
        raise AssertionError(f"oracle: {pulp.LpStatus[prob.status]}")
    return round(pulp.value(prob.objective) or 0)
