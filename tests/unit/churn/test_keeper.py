"""The running coordinator's availability history (``churn.keeper``): learned from the nodes
table's changes, persisted per node, reloaded by a new leader; and the placer routing."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cloudless.churn.keeper import AvailabilityKeeper, describe_node, history_table
from cloudless.churn.log import SessionLog
from cloudless.churn.model import AvailabilityModel
from cloudless.churn.route import StrategyPlacer
from cloudless.churn.target import AvailabilityPlacer
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import FakeClock
from cloudless.model.departure import parse_reserved
from cloudless.model.node import Node, NodeState
from cloudless.model.resources import Resources
from cloudless.model.workload import Placement, WorkloadSpec
from cloudless.scheduler import Scheduler
from cloudless.scheduler.config import SchedulerConfig, Strategy
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

S = NodeState


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def set_state(state: ClusterState, node_id: str, to: NodeState) -> None:
    await state.nodes.update(node_id, lambda n: None if n is None else replace(n, state=to))
    await settle()


async def test_learns_from_node_changes_persists_and_a_new_leader_goes_on() -> None:
    clock = FakeClock(start=1_000_000.0)
    state = ClusterState(MemoryStore(clock))
    await state.nodes.put("n1", Node.make("n1", state=S.READY))
    placer = AvailabilityPlacer(Scheduler())
    keeper = AvailabilityKeeper(state.store, state.nodes, clock, placer, relearn_s=60)
    lead = asyncio.create_task(keeper.lead(NO_FENCE))
    try:
        await settle()
        # up from 1,000,000 (its session opened when the leader started)
        clock.advance(3600)
        await set_state(state, "n1", S.OFFLINE)  # a 1 h session ends
        clock.advance(1800)
        await set_state(state, "n1", S.READY)  # back after 30 min
        clock.advance(60)
        await settle()
    finally:
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)
    rec = await history_table(state.store).get("n1")
    assert rec is not None
    assert rec.value["sessions"] == [[1_000_000.0, 1_003_600.0]]
    assert rec.value["open_since"] == 1_005_400.0
    # the placer was fed (re-learned 60 s after the last change): 1 departure over
    # 3,600 + 60 online seconds -> a mean session of ~3,660 s
    m = placer.models["n1"]
    assert m.mean_session_s() == pytest.approx(3660.0, rel=0.01)  # decayed by age

    # a new leader (a new keeper) loads it, and the open session goes on (no new session)
    keeper2 = AvailabilityKeeper(state.store, state.nodes, clock, None)
    lead2 = asyncio.create_task(keeper2.lead(NO_FENCE))
    try:
        await settle()
        clock.advance(600)
        await set_state(state, "n1", S.DEPARTED)  # a planned departure is still absence
        await settle()
    finally:
        lead2.cancel()
        await asyncio.gather(lead2, return_exceptions=True)
    rec = await history_table(state.store).get("n1")
    assert rec is not None
    assert rec.value["sessions"] == [[1_000_000.0, 1_003_600.0], [1_005_400.0, 1_006_060.0]]
    assert rec.value["open_since"] is None


def test_describe_node_shows_the_model_with_reserved_hours_at_zero() -> None:
    # online every day 0-12 h (bins of the week's frame) for two weeks
    day = 86400.0
    sessions = [[d * day, d * day + 12 * 3600] for d in range(14)]
    history = {"since": 0.0, "sessions": sessions, "open_since": None}
    n = Node.make("n1", reserved_hours=parse_reserved("Thu 2-4"))  # bins 2, 3 (Thu, epoch)
    got = describe_node(n, history, 14 * day)  # now: hour 0 of a Thursday
    model = got["model"]
    assert got["reserved_hours"] == ["Thu 02:00-04:00 UTC"]
    hours = [h["p_online"] for h in model["next_hours"]]
    # hours 0-1 online as seen (~0.99), 2-3 reserved (0), 4-11 online, 12 h in total
    assert len(hours) == 12 and hours[2] == hours[3] == 0.0
    assert min(hours[:2] + hours[4:]) > 0.9
    # 12 h sessions; departures and online time are decayed by age, hence within 2%
    assert model["sessions"] == 14 and model["mean_session_h"] == pytest.approx(12.0, rel=0.02)
    assert describe_node(n, None, 0.0)["model"] is None


def test_strategy_placer_routes_availability_workloads() -> None:
    avail = AvailabilityPlacer(Scheduler())
    big = Resources(4000, 8 << 30)
    nodes = [Node.make(f"n{i}", state=S.READY, allocatable=big, capacity=big) for i in (1, 2)]
    # n1 is online only half the time, n2 nearly always
    flaky = AvailabilityModel(tuple([0.5] * 168), 1 / 3600, 7 * 86400.0)
    steady = AvailabilityModel(tuple([0.99] * 168), 1 / (30 * 86400), 7 * 86400.0)
    avail.update({"n1": flaky, "n2": steady}, 0.0)
    plain = WorkloadSpec(name="a", image="x", replicas=1, resources=Resources(100))
    wants = replace(plain, name="b", placement=Placement(strategy="availability"))
    router = StrategyPlacer(Scheduler(), avail)
    assert router.placer_for(plain) is router.plain
    assert router.placer_for(wants) is router.availability
    assert router.place(nodes, [], {}, wants, 1).node_ids == ("n2",)
    # the cluster's default strategy routes every workload without its own
    by_default = StrategyPlacer(Scheduler(SchedulerConfig(strategy=Strategy.AVAILABILITY)), avail)
    assert by_default.placer_for(plain) is by_default.availability
    # --scheduler availability (a bare name) and strategy=availability both parse
    assert SchedulerConfig.parse("availability").strategy is Strategy.AVAILABILITY
    assert SchedulerConfig.parse("strategy=availability").strategy is Strategy.AVAILABILITY


def test_predict_names_the_target_and_the_replicas() -> None:
    from cloudless.churn.target import predict

    steady = AvailabilityModel(tuple([0.99] * 168), 1 / (30 * 86400), 7 * 86400.0)
    # two steady devices: P(at least one up) ~ 1 - 0.01^2 per hour, minus the small chance
    # of leaving within 6 h; a device without a model counts as 0.5
    p = predict(["a", "b"], {"a": steady, "b": steady}, 0.0, target=0.999)
    assert p.met and p.availability > 0.999
    weak = predict(["x"], {}, 0.0, target=0.999)
    assert weak.availability == 0.5 and not weak.met
    assert weak.explain() == (
        "predicted availability 0.50000 (at least 1 of 1 replicas up) misses the target 0.99900"
    )


class CountingLog(SessionLog):
    def __init__(self) -> None:
        super().__init__()
        self.learned: list[str] = []

    def model(self, node_id: str, now: float) -> AvailabilityModel | None:
        self.learned.append(node_id)
        return super().model(node_id, now)


async def test_models_are_learned_when_read_and_a_change_relearns_only_its_node() -> None:
    """The keeper's hand-over costs nothing until the placer reads a model; then each model
    is learned once, equal to learning it eagerly, and a node's change re-learns only that
    node while the others' models are younger than ``relearn_s``."""
    clock = FakeClock(start=1_000_000.0)
    state = ClusterState(MemoryStore(clock))
    for i in range(3):
        await state.nodes.put(f"n{i}", Node.make(f"n{i}", state=S.READY))
    placer = AvailabilityPlacer(Scheduler())
    keeper = AvailabilityKeeper(state.store, state.nodes, clock, placer, relearn_s=60)
    lead = asyncio.create_task(keeper.lead(NO_FENCE))
    try:
        await settle()
        log = CountingLog()
        log.devices = keeper.log.devices
        keeper.log = log
        clock.advance(30)
        keeper._relearn(clock.now())  # as the timer does
        assert log.learned == []  # handed over, nothing learned yet
        eager = {n: SessionLog.model(log, n, clock.now()) for n in ("n0", "n1", "n2")}
        assert dict(placer.models) == eager
        assert sorted(log.learned) == ["n0", "n1", "n2"]
        log.learned.clear()
        dict(placer.models)
        assert log.learned == []  # kept
        clock.advance(10)
        await set_state(state, "n1", S.OFFLINE)
        assert dict(placer.models).keys() == {"n0", "n1", "n2"}
        assert log.learned == ["n1"]  # the others are 10 s old: kept
        log.learned.clear()
        clock.advance(55)  # n0 and n2 were learned 65 s ago
        await set_state(state, "n1", S.READY)
        dict(placer.models)
        assert sorted(log.learned) == ["n0", "n1", "n2"]
    finally:
        lead.cancel()
        await asyncio.gather(lead, return_exceptions=True)
