"""Filter: nodes without the label a spread or per-domain limit is keyed on are in no domain,
so they cannot take part (as in Kubernetes' topology spread)."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter

NAME = "topology"


def missing_reason(key: str) -> str:
    return f"no {key} label"


def topology_keys(spec: WorkloadSpec) -> list[str]:
    p = spec.placement
    keys = [c.topology_key for c in p.spread] + [k for k, _ in p.max_per_domain]
    return list(dict.fromkeys(keys))


class TopologyFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(topology_keys(spec))

    def check(self, g: Group, detail: bool) -> Checks:
        return [(missing_reason(k), g.snap.column(k).codes > 0) for k in topology_keys(g.spec)]
