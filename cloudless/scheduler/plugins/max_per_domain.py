"""Filter: at most N replicas of the workload per domain of a topology key
(``placement.max_per_domain: {zone: 2}``)."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh

NAME = "max_per_domain"


def reason(key: str, n: int) -> str:
    return f"max_per_domain {key}={n} reached"


class MaxPerDomainFilter(Filter):
    name = NAME
    refresh = Refresh.STEP

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.placement.max_per_domain)

    def check(self, g: Group, detail: bool) -> Checks:
        out = []
        for key, n in g.spec.placement.max_per_domain:
            dc = g.own_domain(key)
            out.append((reason(key, n), dc[g.snap.column(key).codes] < n))
        return out
