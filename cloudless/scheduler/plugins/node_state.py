"""Filter: only ``ready`` nodes take new replicas; the reason is the node's state."""

from __future__ import annotations

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter
from cloudless.scheduler.snapshot import READY_CODE, STATES

NAME = "node_state"


class NodeStateFilter(Filter):
    name = NAME

    def check(self, g: Group, detail: bool) -> Checks:
        st = g.snap.state
        if not detail:
            return [("not ready", st == READY_CODE)]
        return [(s.value, st != code) for code, s in enumerate(STATES) if code != READY_CODE]
