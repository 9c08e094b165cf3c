"""A small, obviously-correct placer for reconciliation tests (the seam's fake).

It places on ready nodes with room, fewest replicas of the workload first, then by node id;
every replica holds room until its record is deleted (a stopping one still runs), except a
lost one (its node went away). It ranks replicas on nodes that would still take them first,
then by node id. The real placer is ``SchedulerPlacer``; both pass
``tests/contract/coordinator/test_placer_contract.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cloudless.coordinator.deciders.reconcile import PlaceResult
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec


class FakePlacer:
    def place(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        count: int,
    ) -> PlaceResult:
        used: dict[str, Resources] = {}
        mine: dict[str, int] = {}
        for r in replicas:
            if r.observed is not ReplicaState.LOST and r.workload in workloads:
                res = workloads[r.workload].resources
                used[r.node_id] = used.get(r.node_id, Resources()) + res
                if r.workload == spec.name:
                    mine[r.node_id] = mine.get(r.node_id, 0) + 1
        chosen: list[str] = []
        ready = [n for n in nodes if n.state is NodeState.READY]
        for _ in range(count):
            fits = [
                n
                for n in ready
                if (used.get(n.id, Resources()) + spec.resources).fits(n.allocatable)
                and (
                    not spec.placement.max_per_node
                    or mine.get(n.id, 0) < spec.placement.max_per_node
                )
            ]
            if not fits:
                break
            best = min(fits, key=lambda n: (mine.get(n.id, 0), n.id))
            chosen.append(best.id)
            used[best.id] = used.get(best.id, Resources()) + spec.resources
            mine[best.id] = mine.get(best.id, 0) + 1
        reason = ""
        if len(chosen) < count:
            reason = f"0/{len(nodes)} nodes fit: {len(nodes) - len(ready)} not ready"
        return PlaceResult(tuple(chosen), reason)

    def rank(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        candidates: Sequence[Replica],
    ) -> list[Replica]:
        ready = {n.id for n in nodes if n.state is NodeState.READY}
        return sorted(candidates, key=lambda r: (r.node_id not in ready, r.node_id, r.id))
