"""Filter: nodes under memory or disk pressure take no new replicas."""

from __future__ import annotations

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, fold

NAME = "node_conditions"
MEMORY = "memory pressure"
DISK = "disk pressure"


class NodeConditionsFilter(Filter):
    name = NAME

    def check(self, g: Group, detail: bool) -> Checks:
        out = [(MEMORY, ~g.snap.memory_pressure), (DISK, ~g.snap.disk_pressure)]
        return out if detail else fold("pressure", [m for _, m in out], g.snap.n)
