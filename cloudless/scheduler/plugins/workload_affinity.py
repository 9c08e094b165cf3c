"""Filter: required workload affinity and anti-affinity to *other* workloads' replicas in the
same node/zone/region (or any label) domain, including other workloads' required
anti-affinity towards this one (anti-affinity is symmetric). Terms on the workload itself
change as it is placed and live in ``self_affinity``."""

from __future__ import annotations

from cloudless.model.workload import WorkloadAffinity, WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter

NAME = "workload_affinity"


def affinity_reason(t: WorkloadAffinity) -> str:
    if t.anti:
        return f"replica of {t.workload} in the same {t.topology_key}"
    return f"no replica of {t.workload} in the same {t.topology_key}"


def symmetric_reason(owner: str, key: str) -> str:
    return f"{owner} refuses to share its {key}"


def symmetric_terms(specs: dict[str, WorkloadSpec], name: str) -> list[tuple[str, str]]:
    """``(owner, topology_key)`` for every other workload with required anti-affinity to
    ``name``, in name order."""
    out = []
    for owner in sorted(specs):
        if owner == name:
            continue
        for t in specs[owner].placement.required_workload_affinity:
            if t.anti and t.workload == name:
                out.append((owner, t.topology_key))
    return out


class WorkloadAffinityFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return True  # symmetric terms come from other workloads

    def check(self, g: Group, detail: bool) -> Checks:
        out = []
        for t in g.spec.placement.required_workload_affinity:
            if t.workload == g.name:
                continue
            here = g.present(t.workload, t.topology_key)
            out.append((affinity_reason(t), ~here if t.anti else here))
        for owner, key in symmetric_terms(g.ws.specs, g.name):
            out.append((symmetric_reason(owner, key), ~g.present(owner, key)))
        return out
