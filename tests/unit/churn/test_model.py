"""The availability model and the availability target, on small tables with the
arithmetic beside each case."""

from __future__ import annotations

import math

import pytest

from cloudless.churn.model import HOUR_S, AvailabilityModel, hour_of_week
from cloudless.churn.target import AvailabilityPlacer, at_least, predicted
from cloudless.lib.errors import ValidationError
from cloudless.model.replica import Replica
from cloudless.scheduler.testing import node, spec

DAY = 86400.0
WEEK = 7 * DAY
NO_DECAY = 1e15


def weekday_9_to_17(weeks: int) -> list[tuple[float, float]]:
    return [
        (w * WEEK + d * DAY + 9 * HOUR_S, w * WEEK + d * DAY + 17 * HOUR_S)
        for w in range(weeks)
        for d in range(5)
    ]


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        # 2 weeks seen, the 10:00 hour online both times: (7200 + 0.5*600) / (7200 + 600)
        (10 * HOUR_S, 7500 / 7800),
        # 20:00 never online: (0 + 300) / 7800
        (20 * HOUR_S, 300 / 7800),
        # Saturday 10:00 (day 5) never online: same
        (5 * DAY + 10 * HOUR_S, 300 / 7800),
    ],
)
def test_hour_of_week_profile(t: float, expected: float) -> None:
    m = AvailabilityModel.learn(weekday_9_to_17(2), 0.0, 2 * WEEK, half_life_s=NO_DECAY)
    assert m.p_online(t) == pytest.approx(expected, rel=1e-9)


def test_decay_weights_recent_weeks_more() -> None:
    # online at 10:00 in week 0 only; half-life one week. Week 0's slot is ~1.5 weeks old
    # (weight ~2^-1.5 = 0.35), week 1's ~0.5 weeks (weight ~0.71): p ~ (0.35*3600 + 300) /
    # ((0.35 + 0.71)*3600 + 600) ~ 0.36, below the undecayed (3600 + 300) / 7800 = 0.5
    sessions = [(10 * HOUR_S, 11 * HOUR_S)]
    m = AvailabilityModel.learn(sessions, 0.0, 2 * WEEK, half_life_s=WEEK)
    assert 0.3 < m.p_online(10 * HOUR_S) < 0.4


@pytest.mark.parametrize(
    ("lengths_h", "open_age_h", "horizon_h", "expected"),
    [
        # 2 ended 8 h sessions (< 3): memoryless, lam = 2 / 16 h -> exp(-1/8 * 1)
        ((8, 8), 0, 1, math.exp(-2 / 16)),
        # 6 ended sessions 1,2,10,10,10,20 h, open one 5 h old: 4 lasted >= 5 h, of which 1
        # lasted >= 15 h -> 1/4
        ((1, 2, 10, 10, 10, 20), 5, 10, 0.25),
        # same, 0 h more: 4/4
        ((1, 2, 10, 10, 10, 20), 5, 0, 1.0),
    ],
)
def test_p_stay(
    lengths_h: tuple[int, ...], open_age_h: int, horizon_h: int, expected: float
) -> None:
    t, sessions = 0.0, []
    for h in lengths_h:
        sessions.append((t, t + h * HOUR_S))
        t += h * HOUR_S + HOUR_S
    now = t + open_age_h * HOUR_S
    if open_age_h:
        sessions.append((t, now))
    m = AvailabilityModel.learn(sessions, 0.0, now, half_life_s=NO_DECAY)
    assert m.p_stay(horizon_h * HOUR_S) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("sessions", "since", "now", "message"),
    [
        ([], 10.0, 5.0, "now (5.0) is before since (10.0)"),
        ([(5.0, 1.0)], 0.0, 10.0, "reversed or overlaps"),
        ([(0.0, 5.0), (4.0, 8.0)], 0.0, 10.0, "reversed or overlaps"),
    ],
)
def test_learn_bad_input(
    sessions: list[tuple[float, float]], since: float, now: float, message: str
) -> None:
    with pytest.raises(ValidationError) as e:
        AvailabilityModel.learn(sessions, since, now)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("ps", "k", "expected"),
    [
        ((0.9, 0.9, 0.9), 1, 1 - 0.1**3),  # 0.999: three 90% devices, one must be up
        ((0.9, 0.9, 0.9), 2, 3 * 0.9**2 * 0.1 + 0.9**3),  # 0.972: a majority
        ((0.5, 0.5), 2, 0.25),
        ((), 1, 0.0),
        ((0.3,), 0, 1.0),
    ],
)
def test_at_least(ps: tuple[float, ...], k: int, expected: float) -> None:
    assert at_least(ps, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ([[1.0, 0.0], [0.0, 1.0]], 1.0),  # day device + night device: always one up
        ([[1.0, 0.0], [1.0, 0.0]], 0.5),  # two day devices: nobody at night
        ([[0.9], [0.9], [0.9]], 0.999),
    ],
)
def test_predicted(windows: list[list[float]], expected: float) -> None:
    assert predicted(windows) == pytest.approx(expected)


def test_placer_prefers_devices_that_stay_and_says_the_prediction() -> None:
    # "steady": one 10-day session still open; "flaky": 30 min on, 30 min off for 10 days.
    # Over the next 6 h the steady one is ~certain to stay, the flaky one almost surely
    # leaves, so the one replica goes to "steady" although the scorer prefers "flaky"
    # (reliability 1.0 vs 0.1 as the nodes say).
    now = 10 * DAY
    steady = AvailabilityModel.learn([(0.0, now)], 0.0, now)
    flaky_s = [(i * 3600.0, i * 3600.0 + 1800.0) for i in range(240)]
    flaky = AvailabilityModel.learn(flaky_s, 0.0, now)
    p = AvailabilityPlacer(horizon_s=6 * HOUR_S, target=0.99)
    p.update({"steady": steady, "flaky": flaky}, now)
    nodes = [node("steady", reliability=0.1), node("flaky", reliability=1.0)]
    res = p.place(nodes, [], {}, spec("w"), 1)
    assert res.node_ids == ("steady",)
    assert p.last is not None
    assert "predicted availability" in p.last.explain()
    assert p.last.nodes == ("steady",)


def test_placer_counts_the_workloads_live_replicas() -> None:
    # one replica already on "a" (max one per node): the next goes to "b"
    now = 10 * DAY
    m = AvailabilityModel.learn([(0.0, now)], 0.0, now)
    p = AvailabilityPlacer()
    p.update({"a": m, "b": m}, now)
    s = spec("w", max_per_node=1)
    res = p.place([node("a"), node("b")], [Replica("w-1", "w", "a")], {"w": s}, s, 1)
    assert res.node_ids == ("b",)
    assert p.last is not None and p.last.nodes == ("a", "b")


def test_hour_of_week() -> None:
    assert hour_of_week(0.0) == 0
    assert hour_of_week(WEEK + 3 * HOUR_S + 5) == 3


def test_session_log_learns_what_it_saw() -> None:
    # up at 0, down at 1 h, up at 2 h, asked at 3 h: sessions (0, 1 h) and (2 h, 3 h) open;
    # hours 0 and 2 online, hour 1 not: p(1 h) = (0 + 300) / (3600 + 600), give or take
    # the 14-day decay (weights within 0.3% of 1 over 3 h)
    from cloudless.churn.log import SessionLog

    log = SessionLog()
    log.up("n", 0.0)
    log.down("n", HOUR_S)
    log.up("n", 2 * HOUR_S)
    m = log.model("n", 3 * HOUR_S)
    assert m is not None
    assert m.p_online(HOUR_S) == pytest.approx(300 / 4200, rel=1e-2)
    assert m.age_s == HOUR_S
    assert log.model("unknown", 1.0) is None
    assert set(log.models(3 * HOUR_S)) == {"n"}


def test_placer_takes_the_specs_target() -> None:
    # an always-on device seen for 10 days: lam = 0 (no departure), each hour of the week
    # seen once or twice -> p ~0.90-0.95; the prediction (~0.9) is judged against the
    # spec's target 0.5 (met), not the placer's 0.999999
    now = 10 * DAY
    m = AvailabilityModel.learn([(0.0, now)], 0.0, now)
    p = AvailabilityPlacer(target=0.999999)
    p.update({"a": m}, now)
    p.place([node("a")], [], {}, spec("w", availability_target=0.5), 1)
    assert p.last is not None and p.last.target == 0.5
    assert 0.85 < p.last.availability < 0.99 and p.last.met
