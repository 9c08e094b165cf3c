"""Filter: required node affinity. Terms are ORed, the expressions of one term ANDed (as in
Kubernetes' nodeSelectorTerms)."""

from __future__ import annotations

import numpy as np

from cloudless.model.workload import AffinityTerm, WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter
from cloudless.scheduler.plugins.labels import expr_mask
from cloudless.scheduler.snapshot import Bool, Snapshot

NAME = "node_affinity"
REASON = "required node affinity not matched"


def term_mask(snap: Snapshot, t: AffinityTerm) -> Bool:
    out = np.ones(snap.n, dtype=np.bool_)
    for e in t.exprs:
        out &= expr_mask(snap, e)
    return out


class NodeAffinityFilter(Filter):
    name = NAME

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.placement.required_node_affinity)

    def check(self, g: Group, detail: bool) -> Checks:
        out = np.zeros(g.snap.n, dtype=np.bool_)
        for t in g.spec.placement.required_node_affinity:
            out |= term_mask(g.snap, t)
        return [(REASON, out)]
