"""Filter: the replica's requests fit the node's free allocatable resources in every
dimension (cpu, memory, disk, bandwidth). Free = allocatable - allocated (snapshot + plan)."""

from __future__ import annotations

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh, fold
from cloudless.scheduler.snapshot import DIMS

NAME = "resources"
REASONS = tuple(f"insufficient {d}" for d in DIMS)


class ResourcesFilter(Filter):
    name = NAME
    refresh = Refresh.NODE

    def check(self, g: Group, detail: bool) -> Checks:
        free = g.snap.alloc - g.ws.used
        out = [(REASONS[d], free[d] >= g.demand[d]) for d in range(4) if g.demand[d] > 0]
        return out if detail else fold("insufficient resources", [m for _, m in out], g.snap.n)

    def check_at(self, g: Group, j: int) -> bool:
        a, u, d = g.snap.alloc[:, j].tolist(), g.ws.used[:, j].tolist(), g.demand_list
        return all(a[k] - u[k] >= d[k] for k in range(4))
