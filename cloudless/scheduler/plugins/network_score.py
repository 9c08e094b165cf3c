"""Factor: network. ``0.7 * min(1, bandwidth / ref) + 0.3 * reach`` with
``ref = max(2 * min_bandwidth, 1 Gbps)``; ``reach = 0.5 * public + 0.5 * (not behind NAT)``
for workloads that serve traffic (ports or ``needs_public``), 1 for the rest."""

from __future__ import annotations

import numpy as np

from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Factor
from cloudless.scheduler.snapshot import F64

NAME = "network"
GBPS = 1e9


class NetworkFactor(Factor):
    name = NAME
    default_weight = 0.10

    def score(self, g: Group) -> F64:
        p = g.spec.placement
        ref = max(2.0 * p.min_bandwidth_bps, GBPS)
        bw = np.minimum(1.0, g.snap.alloc[3] / ref)
        if g.spec.ports or p.needs_public:
            reach = 0.5 * g.snap.public.astype(np.float64) + 0.5 * (~g.snap.nat).astype(np.float64)
        else:
            reach = np.ones(g.snap.n)
        out: F64 = 0.7 * bw + 0.3 * reach
        return out
