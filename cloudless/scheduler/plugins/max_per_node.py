"""Filter: at most ``placement.max_per_node`` replicas of the workload on one node."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh

NAME = "max_per_node"


def reason(n: int) -> str:
    return f"max_per_node {n} reached"


class MaxPerNodeFilter(Filter):
    name = NAME
    refresh = Refresh.NODE

    def applies(self, spec: WorkloadSpec) -> bool:
        return spec.placement.max_per_node > 0

    def check(self, g: Group, detail: bool) -> Checks:
        n = g.spec.placement.max_per_node
        return [(reason(n), g.own < n)]

    def check_at(self, g: Group, j: int) -> bool:
        return bool(g.own[j] < g.spec.placement.max_per_node)
