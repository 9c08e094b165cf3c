"""Filter: a node without the label that one of the workload's own placement rules is keyed
on (spread, per-domain limit, required (anti-)affinity to itself or to another workload) is
in no domain, so the rule cannot be checked there and the node takes no replica. ``node`` is
every node's own label, so node-keyed rules never exclude anything."""

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
    keys += [t.topology_key for t in p.required_workload_affinity]
    return list(dict.fromkeys(keys))


class TopologyFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(topology_keys(spec))

    def check(self, g: Group, detail: bool) -> Checks:
        return [(missing_reason(k), g.snap.column(k).codes > 0) for k in topology_keys(g.spec)]
