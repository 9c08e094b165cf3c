"""Filter: a device port carries one container. A node where a replica (of any workload, this
one included) already publishes one of the workload's device ports (``ports: [{port,
publish}]``) cannot take it."""

from __future__ import annotations

import numpy as np

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh

NAME = "host_ports"


def host_ports(spec: WorkloadSpec) -> frozenset[int]:
    return frozenset(pp.host_port for pp in spec.published)


def reason(spec: WorkloadSpec) -> str:
    ports = sorted(host_ports(spec))
    if len(ports) == 1:
        return f"device port {ports[0]} already published there"
    return f"one of device ports {', '.join(map(str, ports))} already published there"


def rivals(specs: dict[str, WorkloadSpec], spec: WorkloadSpec) -> list[str]:
    """Every workload (``spec``'s own included) publishing one of ``spec``'s device ports."""
    mine = host_ports(spec)
    return [n for n, s in {**specs, spec.name: spec}.items() if mine & host_ports(s)]


class HostPortsFilter(Filter):
    name = NAME
    refresh = Refresh.NODE

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.published)

    def check(self, g: Group, detail: bool) -> Checks:
        taken = np.zeros(g.snap.n, dtype=np.bool_)
        for name in rivals(g.ws.specs, g.spec):
            taken |= g.ws.count(name) > 0
        return [(reason(g.spec), ~taken)]

    def check_at(self, g: Group, j: int) -> bool:
        return all(g.ws.count(name)[j] == 0 for name in rivals(g.ws.specs, g.spec))
