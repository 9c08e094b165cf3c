"""Placement for an availability target, on top of the real scheduler.

Rules:

* the predicted availability of a set of replicas over a window is the mean, over the
  window's hours, of the probability that at least ``quorum`` of them are still up on the
  device they were placed on (``AvailabilityModel.staying``: the device has not left since
  the placement; devices independent given the hour, so a diurnal pattern they share is
  counted, other correlation is not). It ignores replacements, so it is a floor (the
  reconciler replaces a lost replica within seconds), and a device that stays put also
  means no move;
* ``AvailabilityPlacer`` is the reconciler's ``Placer`` seam. Each new replica goes, among
  the nodes the real scheduler accepts for it (``Scheduler.explain``: every filter, with
  the earlier replicas of the plan counted), to the node that raises the predicted
  availability of the workload's live replicas the most, ties by the scheduler's score;
* a node's reliability, as the scheduler sees it, is ``availability * p_stay`` over the
  window (so the scorer also prefers devices likely to stay up);
* the target is the spec's ``placement.availability_target``, else the placer's; it is met
  when the prediction reaches it, and ``last.explain()`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from cloudless.churn.model import HOUR_S, AvailabilityModel
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.deciders.reconcile import PlaceResult
from cloudless.model.node import Node
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Scheduler, Snapshot


def at_least(ps: Sequence[float], k: int) -> float:
    """P(at least ``k`` of independent events with probabilities ``ps`` happen)."""
    if k <= 0:
        return 1.0
    dist = [1.0] + [0.0] * len(ps)  # dist[j] = P(exactly j so far)
    for p in ps:
        for j in range(len(dist) - 1, 0, -1):
            dist[j] = dist[j] * (1.0 - p) + dist[j - 1] * p
        dist[0] *= 1.0 - p
    return sum(dist[k:])


def predicted(windows: Sequence[Sequence[float]], quorum: int = 1) -> float:
    """Mean over hours of P(at least ``quorum`` online); ``windows[i][h]`` = device i, hour h."""
    if not windows:
        return 0.0
    hours = min(len(w) for w in windows)
    return sum(at_least([w[h] for w in windows], quorum) for h in range(hours)) / hours


def staying_window(m: AvailabilityModel | None, now: float, horizon_s: float) -> list[float]:
    """Per hour of the window, the chance the device is still up (0.5 for a device without
    a model)."""
    if m is None:
        return [0.5] * max(1, int(horizon_s // HOUR_S))
    return m.staying(now, horizon_s)


def predict(
    node_ids: Sequence[str],
    models: Mapping[str, AvailabilityModel],
    now: float,
    *,
    horizon_s: float = 6 * HOUR_S,
    target: float = 0.999,
    quorum: int = 1,
) -> Prediction:
    """The predicted availability of replicas on ``node_ids`` over the next ``horizon_s``."""
    windows = [staying_window(models.get(n), now, horizon_s) for n in node_ids]
    return Prediction(tuple(node_ids), predicted(windows, quorum), target, quorum)


@dataclass(frozen=True, slots=True)
class Prediction:
    nodes: tuple[str, ...]
    availability: float
    target: float
    quorum: int

    @property
    def met(self) -> bool:
        return self.availability >= self.target

    def explain(self) -> str:
        verdict = "meets" if self.met else "misses"
        return (
            f"predicted availability {self.availability:.5f} (at least {self.quorum} of "
            f"{len(self.nodes)} replicas up) {verdict} the target {self.target:.5f}"
        )


class AvailabilityPlacer:
    """The ``Placer`` seam, availability-aware. ``update(models, now)`` gives it the
    devices' models and the time of the decision (the caller owns both)."""

    def __init__(
        self,
        scheduler: Scheduler | None = None,
        *,
        horizon_s: float = 6 * HOUR_S,
        target: float = 0.999,
        quorum: int = 1,
    ) -> None:
        self.scheduler = scheduler or Scheduler()
        self.inner = SchedulerPlacer(self.scheduler, reuse=False)
        self.horizon_s = horizon_s
        self.target = target
        self.quorum = quorum
        self.models: Mapping[str, AvailabilityModel] = {}
        self.now = 0.0
        self.last: Prediction | None = None

    def update(self, models: Mapping[str, AvailabilityModel], now: float) -> None:
        self.models = models
        self.now = now

    def _window(self, node_id: str) -> list[float]:
        return staying_window(self.models.get(node_id), self.now, self.horizon_s)

    def _reliability(self, nodes: Sequence[Node]) -> list[Node]:
        out = []
        for x in nodes:
            m = self.models.get(x.id)
            if m is not None:
                rel = m.availability(self.now, self.horizon_s) * m.p_stay(self.horizon_s)
                x = replace(x, reliability=rel)
            out.append(x)
        return out

    def place(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        count: int,
    ) -> PlaceResult:
        ns = self._reliability(nodes)
        placed = [r for r in replicas if r.observed is not ReplicaState.LOST]
        mine = [
            r.node_id
            for r in placed
            if r.workload == spec.name and r.desired is DesiredState.RUNNING and r.node_id
        ]
        chosen: list[str] = []
        extra: list[Replica] = []
        reason = ""
        for i in range(count):
            snap = Snapshot.build(ns, placed + extra, {**workloads, spec.name: spec})
            ex = self.scheduler.explain(snap, spec, top=len(ns))
            if not ex.best:
                reason = ex.rejections.message()
                break
            base = [self._window(n) for n in mine + chosen]
            best = max(
                ex.best,
                key=lambda s: (
                    predicted([*base, self._window(s.node_id)], self.quorum),
                    s.components.total,
                ),
            )
            chosen.append(best.node_id)
            extra.append(Replica(f"{spec.name}-plan-{i}", spec.name, best.node_id))
        self.last = Prediction(
            tuple(mine + chosen),
            predicted([self._window(n) for n in mine + chosen], self.quorum),
            spec.placement.availability_target or self.target,
            self.quorum,
        )
        return PlaceResult(tuple(chosen), reason)

    def rank(
        self,
        nodes: Sequence[Node],
        replicas: Sequence[Replica],
        workloads: Mapping[str, WorkloadSpec],
        spec: WorkloadSpec,
        candidates: Sequence[Replica],
    ) -> list[Replica]:
        return self.inner.rank(self._reliability(nodes), replicas, workloads, spec, candidates)
