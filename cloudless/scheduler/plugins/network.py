"""Filter: public reachability and minimum link bandwidth when the workload asks for them."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter

NAME = "network"
NOT_PUBLIC = "not publicly reachable"


def bandwidth_reason(bps: int) -> str:
    return f"bandwidth below {bps / 1e6:g}Mbps"


class NetworkFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return spec.placement.needs_public or spec.placement.min_bandwidth_bps > 0

    def check(self, g: Group, detail: bool) -> Checks:
        p = g.spec.placement
        out = []
        if p.needs_public:
            out.append((NOT_PUBLIC, g.snap.public.copy()))
        if p.min_bandwidth_bps > 0:
            bw = g.snap.alloc[3] >= float(p.min_bandwidth_bps)
            out.append((bandwidth_reason(p.min_bandwidth_bps), bw))
        return out
