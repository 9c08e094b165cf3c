"""Factor: utilization after the placement, balanced across cpu, memory and disk.

With ``f_d = min(1, (max(allocated_d, live usage_d) + request_d) / allocatable_d)``:
``U = 0.5 * (1 - (max f - min f)) + 0.5 * (1 - mean f)`` -- half balance between the
dimensions, half headroom (spreads load across nodes). Changes only on the node just used.
"""

from __future__ import annotations

import numpy as np

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Factor, Refresh
from cloudless.scheduler.snapshot import F64

NAME = "utilization"


def utilization(used: F64, usage: F64, alloc: F64, demand: F64) -> F64:
    """Pure helper over (4, K) columns; rows 0..2 (cpu, memory, disk) are used."""
    f = []
    for d in range(3):
        a = np.where(alloc[d] > 0, alloc[d], 1.0)
        f.append(np.minimum(1.0, (np.maximum(used[d], usage[d]) + demand[d]) / a))
    hi = np.maximum(np.maximum(f[0], f[1]), f[2])
    lo = np.minimum(np.minimum(f[0], f[1]), f[2])
    mean = (f[0] + f[1] + f[2]) / 3.0
    out: F64 = 0.5 * (1.0 - (hi - lo)) + 0.5 * (1.0 - mean)
    return out


class UtilizationFactor(Factor):
    name = NAME
    default_weight = 0.20
    refresh = Refresh.NODE

    def score(self, g: Group) -> F64:
        return utilization(g.ws.used, g.snap.usage, g.snap.alloc, g.demand)

    def score_at(self, g: Group, j: int) -> float:
        used = g.ws.used[:3, j].tolist()
        usage = g.snap.usage[:3, j].tolist()
        alloc = g.snap.alloc[:3, j].tolist()
        return utilization_one(used, usage, alloc, g.demand[:3].tolist())


def utilization_one(
    used: list[float], usage: list[float], alloc: list[float], demand: list[float]
) -> float:
    """``utilization`` for one node in plain floats (same operations, same rounding)."""
    f = [
        min(1.0, (max(used[d], usage[d]) + demand[d]) / (alloc[d] if alloc[d] > 0 else 1.0))
        for d in range(3)
    ]
    hi = max(max(f[0], f[1]), f[2])
    lo = min(min(f[0], f[1]), f[2])
    mean = (f[0] + f[1] + f[2]) / 3.0
    return 0.5 * (1.0 - (hi - lo)) + 0.5 * (1.0 - mean)
