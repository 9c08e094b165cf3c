"""The churn simulator on hand-made traces: the real reconciler and scheduler decide, the
simulator only plays the devices. Times in seconds; W = the start of the measured week."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from cloudless.churn.fleet import fleet, services
from cloudless.churn.sim import ChurnSim, SimConfig
from cloudless.churn.target import AvailabilityPlacer
from cloudless.churn.traces import WEEK_S, Trace
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Scheduler
from cloudless.scheduler.testing import node

W = WEEK_S
END = W + 86400.0  # a one-day window
CFG = SimConfig(start_s=W, end_s=END, warmup_s=3600.0)


def one(replicas: int = 1) -> list[WorkloadSpec]:
    return services((replicas,), copies=1)


def run(
    traces: list[Trace], announce_s: float, svcs: list[WorkloadSpec] | None = None
) -> dict[str, Any]:
    nodes = [node(t.device, cpu="4", memory="8Gi") for t in traces]
    cfg = SimConfig(start_s=W, end_s=END, warmup_s=3600.0, announce_s=announce_s)
    sim = ChurnSim(
        {t.device: t for t in traces}, nodes, svcs or one(), SchedulerPlacer(Scheduler()), cfg
    )
    return sim.run()


# lap: online from before the warm-up, leaves (planned) at W + 2 h; srv comes up at W + 30 min.
LAP = Trace("lap", "laptop", ((0.0, W + 7200.0),), frozenset({W + 7200.0}))
SRV = Trace("srv", "server", ((W + 1800.0, 2 * W),))


@pytest.mark.parametrize(
    ("announce_s", "lost", "outage_s"),
    [
        # announced 300 s ahead: lap drains, the replacement starts on srv (30 s) and the
        # old replica stops before lap goes -> nothing lost, no outage
        (300.0, 0, 0.0),
        # not announced: the replica goes with lap; detection 0.5 s (the stream closes) +
        # start 30 s -> 30.5 s without a ready replica
        (0.0, 1, 30.5),
    ],
)
def test_planned_departure(announce_s: float, lost: int, outage_s: float) -> None:
    r1 = run([LAP, SRV], announce_s)["R1"]
    assert r1["replicas_lost_at_planned_departures"] == lost
    assert r1["outage_after_planned_departure_s"] == pytest.approx(outage_s)
    assert r1["availability_any"] == pytest.approx(1 - outage_s / 86400.0)
    assert r1["moves_per_day"] == 1.0  # one replacement either way


@pytest.mark.parametrize(
    ("gap_s", "moves", "down_s"),
    [
        # 5 s gap: shorter than the 10 s detection, the node never goes offline
        (5.0, 0.0, 5.0),
        # 40 s gap: offline after 10 s, back before failed (60 s): it keeps its replica
        # (no replacement possible on a one-device fleet, no restart when it is back)
        (40.0, 0.0, 40.0),
        # 120 s gap: failed at 10 + 60 s, its replica deleted; back empty at 120 s, a new
        # replica starts 30 s later -> 150 s down, one move
        (120.0, 1.0, 150.0),
    ],
)
def test_blips_are_not_departures(gap_s: float, moves: float, down_s: float) -> None:
    t = W + 3600.0
    only = Trace("dev", "iot", ((0.0, t), (t + gap_s, 2 * W)))
    r1 = run([only], 0.0)["R1"]
    assert r1["moves_per_day"] == moves
    assert r1["availability_any"] == pytest.approx(1 - down_s / 86400.0)


def test_fleet_day_runs_the_real_policies() -> None:
    # a generated 24-device fleet, one day, R = 3: every policy keeps the service up
    # above 99.9% (replacements within ~30 s); the availability-aware placer decides too
    nodes, traces = fleet(random.Random(5))
    for placer in (SchedulerPlacer(Scheduler()), AvailabilityPlacer(Scheduler())):
        sim = ChurnSim(traces, nodes, services((3,), copies=1), placer, CFG)
        r3 = sim.run()["R3"]
        assert r3["availability_any"] >= 0.999
        assert sim.reconciles > 0


# ---- planned departures through the real departure rules ---------------------------------


def test_announced_departure_costs_no_replica_hours_and_is_not_a_failure() -> None:
    # lap leaves (planned) at W + 2 h; announced 300 s ahead its replica moves to srv first.
    nodes = [node(t.device, cpu="4", memory="8Gi") for t in (LAP, SRV)]
    figures = {}
    for announce_s in (300.0, 0.0):
        cfg = SimConfig(start_s=W, end_s=END, warmup_s=3600.0, announce_s=announce_s)
        sim = ChurnSim({"lap": LAP, "srv": SRV}, nodes, one(), SchedulerPlacer(Scheduler()), cfg)
        figures[announce_s] = sim.run()["R1"]
        lap = sim.st.nodes["lap"]
        if announce_s:
            # departed as announced: not offline/failed, and its reliability not judged down
            assert lap.state.value == "departed"
            assert sim.tracker.components("lap", END).uptime == pytest.approx(1.0)
        else:
            assert lap.state.value == "failed"
    # announced: nothing lost. Not announced: 1 replica short for 0.5 s detection + 30 s
    # start = 30.5 s = 0.00847 replica-hours, all after the planned departure
    assert figures[300.0]["replica_hours_lost_after_planned_departures"] == 0.0
    assert figures[0.0]["replica_hours_lost_after_planned_departures"] == pytest.approx(30.5 / 3600)


def test_owner_reserved_hours_drain_the_node_before_and_give_it_back_after() -> None:
    from cloudless.model.departure import parse_reserved

    # sim time 0 is the Unix epoch's week frame: W + 18 h is a Thursday 18:00 UTC
    gpc = Trace("gpc", "server", ((0.0, 2 * W),))
    srv = Trace("srv", "server", ((W + 1800.0, 2 * W),))  # up after the replica is on gpc
    reserved = parse_reserved("Thu 18-20")
    nodes = [
        replace(node("gpc", cpu="4", memory="8Gi"), reserved_hours=reserved),
        node("srv", cpu="4", memory="8Gi"),
    ]
    seen: list[tuple[float, str, str]] = []

    def watch(t: float) -> None:
        where = ",".join(sorted(r.node_id for r in sim.st.replicas.values()))
        state = sim.st.nodes["gpc"].state.value
        if not seen or seen[-1][1:] != (state, where):
            seen.append((t, state, where))

    cfg = SimConfig(start_s=W, end_s=END, warmup_s=3600.0, announce_s=0.0)
    sim = ChurnSim({"gpc": gpc, "srv": srv}, nodes, one(), SchedulerPlacer(Scheduler()), cfg)
    r1 = sim.run(progress=watch)["R1"]
    # never without a ready replica: the move was make-before-break, 10 min before 18:00
    assert r1["availability_any"] == 1.0
    assert r1["replica_hours_lost"] == 0.0
    drained = [t for t, state, where in seen if state == "cordoned" and where == "srv"]
    assert drained and drained[0] <= W + 18 * 3600.0
    # and at 20:00 gpc takes work again
    assert sim.st.nodes["gpc"].state.value == "ready"
    assert sim.st.nodes["gpc"].departure is None
