"""Factor: locality. 1.0 in a preferred zone, 0.75 in a preferred region, 0 elsewhere; 0.5
everywhere when the workload states no preference. A data-locality hint (node id -> [0, 1],
from the scheduler's ``locality_hint`` hook) raises a node to at least the hinted value."""

from __future__ import annotations

import numpy as np

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Factor
from cloudless.scheduler.plugins.labels import in_values
from cloudless.scheduler.snapshot import F64

NAME = "locality"
ZONE, REGION, NEUTRAL = 1.0, 0.75, 0.5


class LocalityFactor(Factor):
    name = NAME
    default_weight = 0.25

    def score(self, g: Group) -> F64:
        p = g.spec.placement
        n = g.snap.n
        if not p.preferred_zones and not p.preferred_regions:
            out = np.full(n, NEUTRAL)
        else:
            out = np.zeros(n)
            if p.preferred_regions:
                out[in_values(g.snap.column("region"), p.preferred_regions)] = REGION
            if p.preferred_zones:
                out[in_values(g.snap.column("zone"), p.preferred_zones)] = ZONE
        if g.hint is not None:
            out = np.maximum(out, g.hint)
        return out
