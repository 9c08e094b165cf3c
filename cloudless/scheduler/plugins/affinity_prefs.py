"""Score adjustments from preferred affinity (added to the weighted total, may be negative).

Node affinity: ``node_affinity_scale * (sum of weights of matching terms) / (sum of all
weights)``. Workload affinity: each term adds ``+-affinity_scale * weight/100`` where the
node's domain holds a replica of the workload (minus for anti-affinity). Terms on the
workload itself change as it is placed (``step_adjust``); the rest are fixed per workload.
"""

from __future__ import annotations

import numpy as np

from cloudless.model.workload import WorkloadAffinity
from cloudless.scheduler.context import Group
from cloudless.scheduler.plugins.node_affinity import term_mask
from cloudless.scheduler.snapshot import F64


def term_value(t: WorkloadAffinity, scale: float) -> float:
    return (-1.0 if t.anti else 1.0) * (t.weight / 100.0) * scale


def static_adjust(g: Group) -> F64:
    acc = np.zeros(g.snap.n)
    terms = g.spec.placement.preferred_node_affinity
    if terms:
        total_w = float(sum(t.weight for t in terms))
        m = np.zeros(g.snap.n)
        for t in terms:
            m = m + float(t.weight) * term_mask(g.snap, t).astype(np.float64)
        acc = acc + m / total_w * g.node_affinity_scale
    for w in g.spec.placement.preferred_workload_affinity:
        if w.workload == g.name:
            continue
        here = g.present(w.workload, w.topology_key).astype(np.float64)
        acc = acc + term_value(w, g.affinity_scale) * here
    return acc


def has_step_terms(g: Group) -> bool:
    return any(w.workload == g.name for w in g.spec.placement.preferred_workload_affinity)


def step_adjust(g: Group) -> F64:
    acc = np.zeros(g.snap.n)
    for w in g.spec.placement.preferred_workload_affinity:
        if w.workload != g.name:
            continue
        here = g.present(g.name, w.topology_key).astype(np.float64)
        acc = acc + term_value(w, g.affinity_scale) * here
    return acc
