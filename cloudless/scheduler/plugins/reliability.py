"""Factor: the node's reliability score (``cloudless.model.reliability``), clipped to [0, 1]."""

from __future__ import annotations

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Factor
from cloudless.scheduler.snapshot import F64

NAME = "reliability"


class ReliabilityFactor(Factor):
    name = NAME
    default_weight = 0.30

    def score(self, g: Group) -> F64:
        return g.snap.reliability.copy()
