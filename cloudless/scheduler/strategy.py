"""Which strategy places a workload: the caller's, else the spec's ``placement.strategy``,
else the cluster's (``SchedulerConfig.strategy``). ``spread`` is the score strategy with a
soft spread over nodes (a spread constraint on ``node`` whose skew never binds, so only its
preference acts: the node with the fewest replicas of the workload, then the best score)."""

from __future__ import annotations

from dataclasses import replace

from cloudless.model.workload import SpreadConstraint, WorkloadSpec
from cloudless.scheduler.config import Strategy, parse_strategy

#: A skew no placement reaches: the spread filter never refuses, the preference still acts.
SOFT_SKEW = 1_000_000


def with_spread(spec: WorkloadSpec, topology_key: str, max_skew: int = 1) -> WorkloadSpec:
    """``spec`` with a spread constraint on ``topology_key`` (unless it already has one)."""
    if any(c.topology_key == topology_key for c in spec.placement.spread):
        return spec
    extra = (*spec.placement.spread, SpreadConstraint(topology_key, max_skew))
    return replace(spec, placement=replace(spec.placement, spread=extra))


def chosen(spec: WorkloadSpec, explicit: Strategy | None, default: Strategy) -> Strategy:
    if explicit is not None:
        return explicit
    if spec.placement.strategy:
        return parse_strategy(spec.placement.strategy, "spec.placement.strategy")
    return default


def resolve(
    spec: WorkloadSpec, explicit: Strategy | None, default: Strategy
) -> tuple[WorkloadSpec, Strategy]:
    """The spec as placed and the engine strategy (never ``SPREAD`` nor ``AVAILABILITY``:
    the availability placer picks among what the score strategy accepts) for one group."""
    s = chosen(spec, explicit, default)
    if s is Strategy.SPREAD:
        return with_spread(spec, "node", SOFT_SKEW), Strategy.SCORE
    if s is Strategy.AVAILABILITY:
        return spec, Strategy.SCORE
    return spec, s
