"""Filter: every ``node_selector`` expression must match; the reason is the first that fails."""

from __future__ import annotations

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter
from cloudless.scheduler.plugins.labels import expr_failure, expr_mask

NAME = "node_selector"


class NodeSelectorFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.placement.node_selector)

    def check(self, g: Group, detail: bool) -> Checks:
        return [(expr_failure(e), expr_mask(g.snap, e)) for e in g.spec.placement.node_selector]
