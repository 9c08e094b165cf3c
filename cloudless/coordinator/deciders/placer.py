"""The real placer: the reconciler's ``Placer`` seam over ``cloudless.scheduler``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from cloudless.coordinator.deciders.reconcile import PlaceResult
from cloudless.model.node import Node
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.observability.metrics import SCHEDULING, SCHEDULING_DURATION
from cloudless.scheduler.scheduler import Scheduler
from cloudless.scheduler.snapshot import NodeColumns, Snapshot


class SchedulerPlacer:
    """Keeps the node columns of its last call (``NodeColumns``) and updates them from the
    next call's nodes: a round re-reads only the node records that changed since. The result
    is the same as building every snapshot afresh."""

    def __init__(self, scheduler: Scheduler | None = None, *, reuse: bool = True) -> None:
        """``reuse=False`` builds every snapshot afresh (for side-by-side benchmarks)."""
        self.scheduler = scheduler or Scheduler()
        self.reuse = reuse
        self._columns: NodeColumns | None = None

    def columns(self, nodes: Sequence[Node]) -> NodeColumns:
        prev = self._columns if self.reuse else None
        self._columns = prev.update(nodes) if prev is not None else NodeColumns.build(nodes)
        return self._columns

    def place(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        count: int,
    ) -> PlaceResult:
        # Lost replicas sit on offline nodes: they hold no capacity anyone can use and must
        # not count for spread or per-domain limits, or they would block their own
        # replacement until their node is declared failed.
        placed = [r for r in replicas if r.observed is not ReplicaState.LOST]
        t0 = time.perf_counter()
        snap = Snapshot.build(self.columns(nodes), placed, {**workloads, spec.name: spec})
        plan = self.scheduler.place(snap, spec, count)
        SCHEDULING_DURATION.observe(time.perf_counter() - t0)
        ids = plan.node_ids()
        SCHEDULING.labels("placed").inc(len(ids))
        if plan.unplaced:
            SCHEDULING.labels("unplaced").inc(len(plan.unplaced))
        reason = plan.unplaced[0].reason if plan.unplaced else ""
        return PlaceResult(tuple(ids), reason)

    def scores(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
    ) -> dict[str, dict[str, float]]:
        """Each eligible node's score components for one more replica of ``spec``, by node
        id: what a placement decision weighed (trace attributes; only asked for traced
        applies)."""
        placed = [r for r in replicas if r.observed is not ReplicaState.LOST]
        snap = Snapshot.build(self.columns(nodes), placed, {**workloads, spec.name: spec})
        ex = self.scheduler.explain(snap, spec, top=len(nodes))
        return {ns.node_id: ns.components.to_dict() for ns in ex.best}

    def rank(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        candidates: Sequence[Replica],
    ) -> list[Replica]:
        """Best first: by the score the scheduler gives each candidate's node for this spec
        (computed without the candidates themselves, so none is favoured by its own weight);
        nodes that would no longer accept the replica rank last."""
        cand_ids = {r.id for r in candidates}
        others = [r for r in replicas if r.id not in cand_ids]
        snap = Snapshot.build(self.columns(nodes), others, {**workloads, spec.name: spec})
        ex = self.scheduler.explain(snap, spec, top=len(nodes))
        score = {ns.node_id: ns.components.total for ns in ex.best}
        return sorted(candidates, key=lambda r: (-score.get(r.node_id, -1.0), r.id))
