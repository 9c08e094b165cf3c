"""Mutable bookkeeping while one plan is made: ``WorkState`` (per plan) and ``Group`` (one
workload being placed). Placements inside a plan see each other through these.

The snapshot is never mutated; ``WorkState`` copies what it changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.snapshot import F64, I32, Bool, Snapshot, demand_vector, occupies


class WorkState:
    """Resources allocated and replicas counted per node, snapshot plus the plan so far."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.used: F64 = snap.used.copy()
        self.specs: dict[str, WorkloadSpec] = dict(snap.workloads)
        self._counts: dict[str, I32] = {}
        self._in_use: Bool | None = None

    def count(self, workload: str) -> I32:
        """Replicas of ``workload`` per node (a live array: later placements update it)."""
        c = self._counts.get(workload)
        if c is None:
            c = self._counts[workload] = self.snap.count_array(workload)
        return c

    def set_counts(self, workload: str, replicas: Iterable[Replica]) -> None:
        """Count ``replicas`` (instead of the snapshot's) as the placed replicas of
        ``workload``."""
        c = np.zeros(self.snap.n, dtype=np.int32)
        for r in replicas:
            j = self.snap.index.get(r.node_id, -1)
            if j >= 0 and occupies(r):
                c[j] += 1
        self._counts[workload] = c

    def in_use(self) -> Bool:
        """Nodes with anything allocated on them."""
        if self._in_use is None:
            in_use: Bool = np.asarray((self.used > 0).any(axis=0))
            self._in_use = in_use
            return in_use
        return self._in_use

    def add(self, workload: str, j: int, demand: F64) -> None:
        self.used[:, j] += demand
        self.count(workload)[j] += 1
        if self._in_use is not None and demand.any():
            self._in_use[j] = True


class Group:
    """One workload being placed: its spec, demand, and its own replica counts by domain."""

    def __init__(
        self, ws: WorkState, spec: WorkloadSpec, hint: F64 | None, scales: tuple[float, float]
    ) -> None:
        self.ws = ws
        self.snap = ws.snap
        self.spec = spec
        self.name = spec.name
        self.demand: F64 = np.array(demand_vector(spec.resources))
        self.demand_list = self.demand.tolist()
        self.own = ws.count(spec.name)
        self.hint = hint
        self.affinity_scale, self.node_affinity_scale = scales
        self.static_ok: Bool = np.ones(self.snap.n, dtype=np.bool_)
        self._own_dom: dict[str, F64] = {}

    def domain_counts(self, workload: str, key: str) -> F64:
        """Replicas of ``workload`` per domain code of ``key`` (index 0 = nodes without it)."""
        col = self.snap.column(key)
        return np.bincount(
            col.codes, weights=self.ws.count(workload), minlength=len(col.values) + 1
        ).astype(np.float64)

    def present(self, workload: str, key: str) -> Bool:
        """Nodes whose ``key`` domain holds at least one replica of ``workload``."""
        col = self.snap.column(key)
        if workload == self.name:
            dc = self.own_domain(key)
        else:
            dc = self.domain_counts(workload, key)
        return (dc[col.codes] > 0) & (col.codes > 0)

    def own_domain(self, key: str) -> F64:
        """This workload's replicas per domain of ``key`` (kept up to date as it is placed)."""
        dc = self._own_dom.get(key)
        if dc is None:
            col = self.snap.column(key)
            raw = np.bincount(col.codes, weights=self.own, minlength=len(col.values) + 1)
            dc = self._own_dom[key] = raw.astype(np.float64)
        return dc

    def place(self, j: int) -> None:
        self.ws.add(self.name, j, self.demand)
        for key, dc in self._own_dom.items():
            dc[self.snap.column(key).codes[j]] += 1
