"""Filter: required affinity / anti-affinity of a workload to its own replicas (e.g. "one per
zone"). Re-checked before every replica because each placement changes it. Affinity to
itself is satisfied anywhere while the workload has no replica yet."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh
from cloudless.scheduler.plugins.workload_affinity import affinity_reason

NAME = "self_affinity"


class SelfAffinityFilter(Filter):
    name = NAME
    refresh = Refresh.STEP

    def applies(self, spec: WorkloadSpec) -> bool:
        return any(t.workload == spec.name for t in spec.placement.required_workload_affinity)

    def check(self, g: Group, detail: bool) -> Checks:
        out = []
        for t in g.spec.placement.required_workload_affinity:
            if t.workload != g.name:
                continue
            here = g.present(g.name, t.topology_key)
            if t.anti:
                out.append((affinity_reason(t), ~here))
            elif g.own.any():
                out.append((affinity_reason(t), here))
        return out
