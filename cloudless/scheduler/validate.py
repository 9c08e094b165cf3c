"""``validate_placeable``: reject, at submit time, specs that no node could ever run.

"Ever" means: ignoring node state and conditions, what is running now, and other workloads
(which can change), but not the node facts a spec cannot change: labels, arch, device class,
network, and allocatable resources. An empty cluster is not judged (nodes may still join).
"""

from __future__ import annotations

import math

import numpy as np

from cloudless.model.node import NodeState
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group, WorkState
from cloudless.scheduler.engine import count_rejections
from cloudless.scheduler.plugins.base import Checks, Filter
from cloudless.scheduler.registry import FILTERS
from cloudless.scheduler.snapshot import DIMS, STATE_CODE, Snapshot

#: Filters whose answer the workload cannot wait out.
PERMANENT = ("arch", "node_selector", "node_affinity", "network", "topology")


class _NotRemoved(Filter):
    name = "removed"

    def check(self, g: Group, detail: bool) -> Checks:
        return [("removed", g.snap.state != STATE_CODE[NodeState.REMOVED])]


class _Allocatable(Filter):
    name = "allocatable"

    def check(self, g: Group, detail: bool) -> Checks:
        return [
            (f"{DIMS[d]} allocatable below the request", g.snap.alloc[d] >= g.demand[d])
            for d in range(4)
            if g.demand[d] > 0
        ]


def validate_placeable(spec: WorkloadSpec, snapshot: Snapshot) -> list[str]:
    """Every reason ``spec`` can never be fully placed on ``snapshot``'s nodes, as
    ``field: problem; fix`` strings. Empty when it can (or the cluster has no nodes)."""
    if snapshot.n == 0:
        return []
    ws = WorkState(snapshot)
    ws.used = np.zeros_like(ws.used)
    g = Group(ws, spec, None, (0.0, 0.0))
    filters: list[Filter] = [_NotRemoved()]
    filters += [f for f in FILTERS if f.name in PERMANENT and f.applies(spec)]
    filters.append(_Allocatable())
    rej = count_rejections(g, filters)
    if rej.fit == 0:
        top = rej.counts[0][0] if rej.counts else ""
        path = "spec.resources" if "allocatable" in top else "spec.placement"
        return [
            f"{path}: no node can ever run {spec.name} ({rej.message()}); "
            "relax the constraint or add nodes that meet it"
        ]
    ok = np.ones(snapshot.n, dtype=np.bool_)
    for f in filters:
        for _, m in f.check(g, False):
            ok &= m
    problems = []
    p, r = spec.placement, spec.replicas
    fit = int(ok.sum())
    if p.max_per_node and r > p.max_per_node * fit:
        problems.append(
            f"spec.replicas: {r} replicas at max_per_node {p.max_per_node} need "
            f"{math.ceil(r / p.max_per_node)} nodes but only {fit} can ever run {spec.name}; "
            "lower replicas or raise max_per_node"
        )
    for key, n in p.max_per_domain:
        domains = _domains(snapshot, key, ok)
        if r > n * domains:
            problems.append(
                f"spec.placement.max_per_domain.{key}: {r} replicas at {n} per {key} need "
                f"{math.ceil(r / n)} {key}s but only {domains} can run {spec.name}"
            )
    for t in p.required_workload_affinity:
        if t.anti and t.workload == spec.name:
            domains = _domains(snapshot, t.topology_key, ok)
            if r > domains:
                problems.append(
                    f"spec.placement.affinity.required_anti_workloads: one replica per "
                    f"{t.topology_key} needs {r} {t.topology_key}s but only {domains} can "
                    f"run {spec.name}; lower replicas or use preferred anti-affinity"
                )
    return problems


def _domains(snap: Snapshot, key: str, ok: np.ndarray) -> int:  # type: ignore[type-arg]
    codes = snap.column(key).codes[ok]
    return len(set(codes[codes > 0].tolist()))
