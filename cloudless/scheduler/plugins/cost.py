"""Factor: cost. ``0.5 * (1 - cost/max_cost) + 0.5 * shape`` where ``shape = 1 - |cpu share -
memory share|`` of the replica's requests over the node's allocatable: cheap nodes, and nodes
whose shape matches the request (so no dimension is stranded), score high."""

from __future__ import annotations

import numpy as np

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Factor
from cloudless.scheduler.snapshot import F64

NAME = "cost"


def safe(a: F64) -> F64:
    return np.where(a > 0, a, 1.0)


class CostFactor(Factor):
    name = NAME
    default_weight = 0.15

    def score(self, g: Group) -> F64:
        a = g.snap.alloc
        sc = g.demand[0] / safe(a[0])
        sm = g.demand[1] / safe(a[1])
        shape = 1.0 - np.minimum(1.0, np.abs(sc - sm))
        out: F64 = 0.5 * (1.0 - g.snap.cost_norm) + 0.5 * shape
        return out
