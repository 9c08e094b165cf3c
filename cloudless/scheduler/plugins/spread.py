"""Filter + preference: spread replicas evenly over the domains of a topology key.

Hard part (a filter): placing on a node must not make ``count[domain] + 1 - min`` exceed
``max_skew``, where ``min`` is the smallest count over *eligible* domains: domains with at
least one node that passes the static filters and whose allocatable could hold a replica
(a domain that can never hold one must not hold the others back). Soft part (``narrow``):
among the nodes that pass every filter, keep those in the least-loaded domain(s); the
strategy then chooses among them by score. So whenever an even spread is feasible, max - min <= 1.
"""

from __future__ import annotations

import numpy as np

from cloudless.model.workload import SpreadConstraint, WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.base import Checks, Filter, Refresh
from cloudless.scheduler.snapshot import Bool

NAME = "spread"


def reason(c: SpreadConstraint) -> str:
    return f"spread on {c.topology_key} would exceed max_skew {c.max_skew}"


def eligible_domains(g: Group, key: str) -> Bool:
    col = g.snap.column(key)
    out = np.zeros(len(col.values) + 1, dtype=np.bool_)
    could = g.static_ok & (g.snap.alloc >= g.demand[:, None]).all(axis=0)
    out[col.codes[could]] = True
    out[0] = False
    return out


class SpreadFilter(Filter):
    name = NAME
    refresh = Refresh.STEP

    def applies(self, spec: WorkloadSpec) -> bool:
        return bool(spec.placement.spread)

    def check(self, g: Group, detail: bool) -> Checks:
        out = []
        for c in g.spec.placement.spread:
            dc = g.own_domain(c.topology_key)
            elig = eligible_domains(g, c.topology_key)
            low = float(dc[elig].min()) if elig.any() else 0.0
            ok_dom = dc + 1.0 - low <= c.max_skew
            out.append((reason(c), ok_dom[g.snap.column(c.topology_key).codes]))
        return out


def narrow(g: Group, cand: Bool) -> Bool:
    """``cand`` restricted, constraint by constraint, to its least-loaded domains."""
    for c in g.spec.placement.spread:
        if not cand.any():
            return cand
        codes = g.snap.column(c.topology_key).codes
        per_node = g.own_domain(c.topology_key)[codes]
        low = per_node[cand].min()
        cand = cand & (per_node == low)
    return cand
