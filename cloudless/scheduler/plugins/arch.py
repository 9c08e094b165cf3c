"""Filter: the node's arch and device class are among those the workload accepts."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter
from cloudless.scheduler.plugins.labels import in_values

NAME = "arch"


def arch_reason(values: tuple[str, ...]) -> str:
    return f"arch not in [{', '.join(values)}]"


def device_reason(values: tuple[str, ...]) -> str:
    return f"device class not in [{', '.join(values)}]"


class ArchFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.placement.arch or spec.placement.device_classes)

    def check(self, g: Group, detail: bool) -> Checks:
        p = g.spec.placement
        out = []
        if p.arch:
            out.append((arch_reason(p.arch), in_values(g.snap.column("arch"), p.arch)))
        if p.device_classes:
            col = g.snap.column("device_class")
            out.append((device_reason(p.device_classes), in_values(col, p.device_classes)))
        return out
