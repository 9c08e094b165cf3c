"""The churn simulator: availability traces drive a cluster whose decisions are made by the
real reconciler (``cloudless.coordinator.deciders.reconcile.reconcile``) through a real placer (the
scheduler, or the availability-aware placer), with the node states the membership rules
give, and the real ``ReliabilityTracker`` feeding node reliability.

What is simulated is only what agents and the store would do: a device going offline or
coming back (from its trace), a new replica becoming ready ``start_delay_s`` after it is
created on an online device, a stopped replica exiting at once, a device that comes back
within ``failed_after_s`` keeping its replicas (a blip is not a departure) and one that
was gone longer coming back empty (its node failed, its replicas were deleted). Planned
departures are announced ``announce_s`` ahead by writing a ``leave`` departure (deadline:
the moment the device goes) and setting the node draining, as the coordinator's hub does on
an agent's ``Leave``; from there the real departure rules (``departures.decide_departures``,
inside ``reconcile``) move its replicas make-before-break, stop what is left at the
deadline, and the node is ``departed`` when it goes (its reliability is not judged while
away). Time is event driven: nothing is computed between two events.

Per service it reports the fraction of the measured window with at least one replica ready
and with a quorum (a majority) ready, replicas created per day after the first placement
("moves"), replica-hours lost (the integral of wanted minus ready replicas), and what
planned departures cost: replicas still on the device when it left, outage seconds and
replica-hours lost that followed one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cloudless.churn.model import AvailabilityModel
from cloudless.churn.target import AvailabilityPlacer
from cloudless.churn.traces import DAY_S, WEEK_S, Trace
from cloudless.coordinator.deciders.departures import RESERVED_LEAD_S, SetDeparture
from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.deciders.reconcile import (
    CreateReplica,
    DeleteReplica,
    DeleteWorkload,
    Placer,
    SetNodeState,
    SetUnplaced,
    UpdateReplica,
    reconcile,
)
from cloudless.coordinator.deciders.reliability import ReliabilityTracker
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.ids import SequentialIds
from cloudless.model.departure import HOUR_S, Departure, DepartureKind, week_bin
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec


@dataclass(frozen=True)
class SimConfig:
    start_s: float = WEEK_S  # the measured window; the trace before it is history
    end_s: float = 2 * WEEK_S
    warmup_s: float = 3600.0  # services are applied this long before the window
    start_delay_s: float = 30.0  # created -> ready (image cached, container start)
    # Offline detection: a planned departure closes the stream (disconnect grace); an
    # unplanned one is noticed by the backstop (silence on an open stream).
    detect_planned_s: float = MembershipConfig().disconnect_grace_s
    detect_unplanned_s: float = MembershipConfig().offline_after_s
    failed_after_s: float = MembershipConfig().failed_after_s
    announce_s: float = 300.0  # 0: planned departures are not announced
    relearn_s: float = 3600.0  # how often availability models are re-learned


@dataclass
class ServiceStats:
    replicas: int
    quorum: int
    up_s: float = 0.0
    quorum_s: float = 0.0
    moves: int = 0
    lost_at_planned: int = 0
    outage_after_planned_s: float = 0.0
    last_loss_planned: bool = False
    deficit_s: float = 0.0  # replica-seconds wanted but not ready
    deficit_after_planned_s: float = 0.0

    def report(self, window_s: float) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "quorum": self.quorum,
            "availability_any": self.up_s / window_s,
            "availability_quorum": self.quorum_s / window_s,
            "moves_per_day": self.moves / (window_s / DAY_S),
            "replicas_lost_at_planned_departures": self.lost_at_planned,
            "outage_after_planned_departure_s": self.outage_after_planned_s,
            "replica_hours_lost": self.deficit_s / 3600.0,
            "replica_hours_lost_after_planned_departures": self.deficit_after_planned_s / 3600.0,
        }


@dataclass
class _State:
    nodes: dict[str, Node]
    replicas: dict[str, Replica] = field(default_factory=dict)
    online: dict[str, bool] = field(default_factory=dict)
    offline_since: dict[str, float] = field(default_factory=dict)


class ChurnSim:
    """One run: ``traces`` and ``nodes`` (same ids), ``services`` to keep running, decided by
    ``placer``. ``models`` (for an ``AvailabilityPlacer``) are learned from the traces'
    history before each decision window; nothing after ``now`` is ever shown to them."""

    def __init__(
        self,
        traces: Mapping[str, Trace],
        nodes: Sequence[Node],
        services: Sequence[WorkloadSpec],
        placer: Placer,
        config: SimConfig | None = None,
    ) -> None:
        self.cfg = config or SimConfig()
        self.traces = traces
        self.placer = placer
        self.st = _State({x.id: x for x in nodes})
        self.records = {s.name: WorkloadRecord(s) for s in services}
        self.stats = {s.name: ServiceStats(s.replicas, s.replicas // 2 + 1) for s in services}
        self.ids = SequentialIds()
        self.tracker = ReliabilityTracker()
        self.events: list[tuple[float, int, str, str]] = []
        self.seq = itertools.count()
        self.reconciles = 0

    # --- events ------------------------------------------------------------------------

    def _at(self, t: float, kind: str, what: str) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, what))

    def _schedule_traces(self) -> None:
        c = self.cfg
        t0 = c.start_s - c.warmup_s
        for d, tr in self.traces.items():
            for s, e in tr.sessions:
                if t0 < s < c.end_s:
                    self._at(s, "up", d)
                if t0 < e < c.end_s:
                    self._at(e, "down", d)
                    if c.announce_s > 0 and e in tr.planned and e - c.announce_s > t0:
                        self._at(e - c.announce_s, "announce", d)
        # Owner-reserved hours: a round when each stretch is due to be announced and when
        # it ends (the rules are decided in ``reconcile``; the simulator only wakes it).
        for n in self.st.nodes.values():
            h = (t0 // HOUR_S) * HOUR_S
            while n.reserved_hours and h < c.end_s:
                now_in = week_bin(h) in n.reserved_hours
                before = week_bin(h - HOUR_S) in n.reserved_hours
                if now_in and not before and h - RESERVED_LEAD_S > t0:
                    self._at(h - RESERVED_LEAD_S, "tick", n.id)
                if before and not now_in:
                    self._at(h, "tick", n.id)
                h += HOUR_S
        t = t0 + c.relearn_s
        while t < c.end_s:
            self._at(t, "learn", "")
            t += c.relearn_s

    def _learn(self, now: float) -> None:
        if not isinstance(self.placer, AvailabilityPlacer):
            return
        models = {}
        for d, tr in self.traces.items():
            seen = [(s, min(e, now)) for s, e in tr.sessions if s < now]
            models[d] = AvailabilityModel.learn(seen, 0.0, now)
        self.placer.update(models, now)

    def _node(self, d: str, state: NodeState, now: float) -> None:
        x = self.st.nodes[d]
        self.st.nodes[d] = replace(x, state=state, reliability=self.tracker.score(d, now))

    def _down(self, d: str, now: float) -> None:
        st = self.st
        planned = now in self.traces[d].planned
        for r in st.replicas.values():
            if r.node_id == d and self._ready(r):
                s = self.stats[r.workload]
                s.last_loss_planned = planned
                if planned and now >= self.cfg.start_s:
                    s.lost_at_planned += 1
        st.online[d] = False
        st.offline_since[d] = now
        c = self.cfg
        self._at(now + (c.detect_planned_s if planned else c.detect_unplanned_s), "offline", d)

    def _offline(self, d: str, now: float) -> None:
        dep = self.st.nodes[d].departure
        if dep is not None and dep.kind is DepartureKind.LEAVE:
            # announced: membership departs it when its stream ends, not offline, not judged
            self.tracker.away(d, now)
            self._node(d, NodeState.DEPARTED, now)
            return
        self.tracker.down(d, now)
        self._node(d, NodeState.OFFLINE, now)
        self._at(now + self.cfg.failed_after_s, "fail", d)

    def _up(self, d: str, now: float) -> None:
        st = self.st
        st.online[d] = True
        self.tracker.up(d, now)
        self._node(d, NodeState.READY, now)
        for r in list(st.replicas.values()):
            if r.node_id != d or r.desired is not DesiredState.RUNNING:
                continue
            if r.started_at > 0:  # it was running: the agent kept it
                st.replicas[r.id] = replace(
                    r, observed=ReplicaState.RUNNING, ready=True, updated_at=now
                )
            else:
                st.replicas[r.id] = replace(r, observed=ReplicaState.PENDING, updated_at=now)
                self._at(now + self.cfg.start_delay_s, "ready", r.id)

    def _ready(self, r: Replica) -> bool:
        return (
            r.observed is ReplicaState.RUNNING
            and r.desired is DesiredState.RUNNING
            and self.st.online.get(r.node_id, False)
        )

    # --- the real decisions --------------------------------------------------------------

    def _apply(self, actions: Sequence[Any], now: float, first: bool) -> None:
        st = self.st
        for a in actions:
            if isinstance(a, CreateReplica):
                st.replicas[a.replica.id] = a.replica
                if not first and now >= self.cfg.start_s:
                    self.stats[a.replica.workload].moves += 1
                if st.online.get(a.replica.node_id, False):
                    self._at(now + self.cfg.start_delay_s, "ready", a.replica.id)
            elif isinstance(a, UpdateReplica):
                r = a.replica
                if r.desired is DesiredState.STOPPED and st.online.get(r.node_id, False):
                    r = replace(r, observed=ReplicaState.EXITED, exit_code=0)
                st.replicas[r.id] = r
            elif isinstance(a, DeleteReplica):
                st.replicas.pop(a.replica_id, None)
            elif isinstance(a, SetUnplaced):
                rec = self.records[a.workload]
                self.records[a.workload] = replace(rec, unplaced=a.count, unplaced_reason=a.reason)
            elif isinstance(a, SetNodeState):
                self._node(a.node_id, a.state, now)
            elif isinstance(a, SetDeparture):
                x = st.nodes[a.node_id]
                moved = x.moved_to(a.state)[0] if a.state is not None else None
                st.nodes[a.node_id] = replace(moved or x, departure=a.departure)
                if a.departure is not None and a.departure.deadline > now:
                    self._at(a.departure.deadline, "tick", a.node_id)
            elif isinstance(a, DeleteWorkload):  # pragma: no cover - services are never deleted
                self.records.pop(a.workload, None)

    def _reconcile(self, now: float, first: bool = False) -> None:
        if isinstance(self.placer, AvailabilityPlacer):
            self.placer.now = now
        for _ in range(6):
            view = ClusterView(dict(self.st.nodes), dict(self.records), dict(self.st.replicas))
            actions = reconcile(view, self.placer, self.ids, now)
            self.reconciles += 1
            if not actions:
                return
            self._apply(actions, now, first)

    # --- the run ---------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> dict[str, Any]:
        c, st = self.cfg, self.st
        t = c.start_s - c.warmup_s
        for d, tr in self.traces.items():
            st.online[d] = tr.online_at(t)
            if st.online[d]:
                self.tracker.up(d, t)
            self._node(d, NodeState.READY if st.online[d] else NodeState.FAILED, t)
        self._learn(t)
        self._reconcile(t, first=True)
        self._schedule_traces()
        while self.events:
            nxt = min(self.events[0][0], c.end_s)
            self._account(nxt - max(t, c.start_s))
            t = nxt
            if t >= c.end_s:
                break
            while self.events and self.events[0][0] <= t:
                _, _, kind, what = heapq.heappop(self.events)
                self._event(kind, what, t)
            self._reconcile(t)
            if progress:
                progress(t)
        if t < c.end_s:
            self._account(c.end_s - t)
        window = c.end_s - c.start_s
        return by_replicas({name: s.report(window) for name, s in self.stats.items()})

    def _event(self, kind: str, what: str, t: float) -> None:
        st = self.st
        if kind == "down":
            self._down(what, t)
        elif kind == "up":
            self._up(what, t)
        elif kind == "offline":
            if not st.online[what] and st.nodes[what].state is not NodeState.OFFLINE:
                self._offline(what, t)
        elif kind == "fail":
            if not st.online[what] and st.nodes[what].state is NodeState.OFFLINE:
                since = st.offline_since[what]
                if t - since >= self.cfg.failed_after_s:
                    self._node(what, NodeState.FAILED, t)
        elif kind == "announce":
            if st.online[what] and st.nodes[what].state is NodeState.READY:
                dep = Departure(DepartureKind.LEAVE, "planned", t, t + self.cfg.announce_s)
                st.nodes[what] = replace(st.nodes[what], departure=dep)
                self._node(what, NodeState.DRAINING, t)
        elif kind == "ready":
            r = st.replicas.get(what)
            if r and r.observed is ReplicaState.PENDING and st.online.get(r.node_id, False):
                st.replicas[what] = replace(
                    r, observed=ReplicaState.RUNNING, ready=True, started_at=t, updated_at=t
                )
        elif kind == "learn":
            self._learn(t)
        # "tick": nothing happens but a reconcile round (a departure's deadline, reserved hours)

    def _account(self, dt: float) -> None:
        if dt <= 0:
            return
        ready: dict[str, int] = dict.fromkeys(self.stats, 0)
        for r in self.st.replicas.values():
            if self._ready(r):
                ready[r.workload] += 1
        for name, s in self.stats.items():
            short = max(0, s.replicas - ready[name]) * dt
            s.deficit_s += short
            if s.last_loss_planned:
                s.deficit_after_planned_s += short
            if ready[name] >= 1:
                s.up_s += dt
            elif s.last_loss_planned:
                s.outage_after_planned_s += dt
            if ready[name] >= s.replicas:
                s.last_loss_planned = False  # whole again: later shortfalls have other causes
            if ready[name] >= s.quorum:
                s.quorum_s += dt


def by_replicas(per_service: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per replica count ``R<n>``: the mean of each figure over the services with that count
    (the worst service's availability too)."""
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for rep in per_service.values():
        groups.setdefault(int(rep["replicas"]), []).append(rep)
    out: dict[str, Any] = {}
    for r in sorted(groups):
        g = groups[r]
        row: dict[str, Any] = {"services": len(g)}
        for k in g[0]:
            if k in ("replicas", "quorum"):
                row[k] = g[0][k]
            else:
                row[k] = sum(float(x[k]) for x in g) / len(g)
        row["worst_availability_any"] = min(float(x["availability_any"]) for x in g)
        row["worst_availability_quorum"] = min(float(x["availability_quorum"]) for x in g)
        out[f"R{r}"] = row
    return out
