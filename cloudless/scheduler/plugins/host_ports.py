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


def reason(ports: frozenset[int]) -> str:
    return f"device port {', '.join(str(p) for p in sorted(ports))} already published there"


def _rivals(g: Group) -> list[tuple[str, frozenset[int]]]:
    """Every workload (this one included, as it is being placed) sharing a device port with
    ``g``, and the ports shared."""
    mine = host_ports(g.spec)
    specs = {**g.ws.specs, g.name: g.spec}
    return [(n, both) for n, spec in specs.items() if (both := mine & host_ports(spec))]


class HostPortsFilter(Filter):
    name = NAME
    refresh = Refresh.NODE

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.published)

    def check(self, g: Group, detail: bool) -> Checks:
        taken = np.zeros(g.snap.n, dtype=np.bool_)
        clash: set[int] = set()
        for name, both in _rivals(g):
            here = g.ws.count(name) > 0
            if here.any():
                taken |= here
                clash |= both
        return [(reason(frozenset(clash) or host_ports(g.spec)), ~taken)]

    def check_at(self, g: Group, j: int) -> bool:
        return all(g.ws.count(name)[j] == 0 for name, _ in _rivals(g))
