"""The running coordinator's placer: the strategy of each workload picks who places it.

A workload whose strategy (its spec's ``placement.strategy``, else the cluster's default,
``--scheduler strategy=availability``) is ``availability`` is placed and ranked by the
``AvailabilityPlacer`` (fed by ``keeper.AvailabilityKeeper``); every other workload by the
plain ``SchedulerPlacer``. Both sit on the same scheduler, so filters and reasons agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cloudless.churn.target import AvailabilityPlacer
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.deciders.reconcile import Placer, PlaceResult
from cloudless.model.node import Node
from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.config import Strategy
from cloudless.scheduler.scheduler import Scheduler
from cloudless.scheduler.strategy import chosen


class StrategyPlacer:
    def __init__(self, scheduler: Scheduler, availability: AvailabilityPlacer) -> None:
        self.default = scheduler.config.strategy
        self.plain = SchedulerPlacer(scheduler)
        self.availability = availability

    def placer_for(self, spec: WorkloadSpec) -> Placer:
        if chosen(spec, None, self.default) is Strategy.AVAILABILITY:
            return self.availability
        return self.plain

    def place(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        count: int,
    ) -> PlaceResult:
        return self.placer_for(spec).place(nodes, replicas, workloads, spec, count)

    def rank(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        candidates: Sequence[Replica],
    ) -> list[Replica]:
        return self.placer_for(spec).rank(nodes, replicas, workloads, spec, candidates)

    def scores(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
    ) -> dict[str, dict[str, float]]:
        """The scheduler's score components (trace attributes), whichever placer places."""
        return self.plain.scores(nodes, replicas, workloads, spec)
