import pytest

from cloudless.coordinator.deciders.reliability import ReliabilityTracker
from cloudless.model.resources import Resources


def test_new_healthy_node_scores_one() -> None:
    t = ReliabilityTracker()
    t.up("n", 0.0)
    for i in range(10):
        t.heartbeat("n", i * 0.5, 0.5)
    assert t.score("n", 5.0) == pytest.approx(1.0)


def test_uptime_and_stability_after_an_outage() -> None:
    t = ReliabilityTracker(window_s=100.0, max_flaps=4)
    t.up("n", 0.0)
    t.down("n", 60.0)  # up 60 s
    t.up("n", 80.0)  # down 20 s
    c = t.components("n", 100.0)
    # uptime: (60 + 20) / 100 = 0.8; stability: 1 - 1/4 = 0.75
    assert c.uptime == pytest.approx(0.8)
    assert c.stability == pytest.approx(0.75)
    # score = .3*.8 + .2*1 + .2*1 + .15*1 + .15*.75 = .24+.2+.2+.15+.1125 = 0.9025
    assert t.score("n", 100.0) == pytest.approx(0.9025)


def test_late_heartbeats_lower_response() -> None:
    t = ReliabilityTracker()
    t.up("n", 0.0)
    t.heartbeat("n", 0.0, 0.5)
    t.heartbeat("n", 7.5, 0.5)  # 7.5 s gap, target 0.75: 1 - (7.5-.75)/(9*.75) = 0.0
    # EMA: 0.8 * 1 + 0.2 * 0 = 0.8
    assert t.components("n", 8.0).response == pytest.approx(0.8)


def test_success_and_capacity() -> None:
    t = ReliabilityTracker()
    t.up("n", 0.0)
    t.replica_outcome("n", failed=True, now=1.0)
    t.replica_outcome("n", failed=False, now=2.0)
    # prior 1 ok + 1 ok, 1 failed: 2/3
    t.usage("n", Resources(500, 3 << 30), Resources(1000, 4 << 30), 2.0)
    c = t.components("n", 2.0)
    assert c.success == pytest.approx(2 / 3)
    assert c.capacity == pytest.approx(0.25)  # 1 - max(0.5, 0.75)


def test_old_flaps_leave_the_window() -> None:
    t = ReliabilityTracker(window_s=10.0, max_flaps=2)
    t.up("n", 0.0)
    t.down("n", 1.0)
    t.up("n", 2.0)
    assert t.components("n", 5.0).stability == pytest.approx(0.5)
    assert t.components("n", 12.0).stability == pytest.approx(1.0)


def test_time_away_after_a_planned_departure_is_not_judged() -> None:
    t = ReliabilityTracker(window_s=100.0, max_flaps=4)
    t.up("n", 0.0)
    t.away("n", 60.0)  # left as announced after 60 s up
    t.down("n", 61.0)  # a late offline for the same departure: ignored
    # while away the score stays where it was: uptime 60/60 = 1, no flap
    assert t.components("n", 90.0).uptime == pytest.approx(1.0)
    t.up("n", 150.0)  # back after 90 s away
    c = t.components("n", 160.0)
    # seen: 60 s before + 10 s after = 70 s, all up; no flap
    assert c.uptime == pytest.approx(1.0)
    assert c.stability == pytest.approx(1.0)
