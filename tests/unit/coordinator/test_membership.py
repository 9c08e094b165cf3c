import pytest

from cloudless.coordinator.deciders.membership import Membership, MembershipConfig
from cloudless.model.node import Node, NodeState

S = NodeState
CFG = MembershipConfig(
    heartbeat_interval_s=0.5,
    offline_after_s=2.5,
    disconnect_grace_s=1.0,
    failed_after_s=60.0,
    leader_grace_s=5.0,
    max_heartbeats_per_s=2500.0,
)


def tracker(*states: NodeState) -> Membership:
    m = Membership(CFG)
    m.load([Node.make(f"n{i}", state=s) for i, s in enumerate(states)], now=0.0)
    return m


def test_first_heartbeat_makes_ready() -> None:
    m = tracker(S.ENROLLING)
    [t] = m.heartbeat("n0", 1.0)
    assert (t.old, t.new, t.reason) == (S.ENROLLING, S.READY, "first heartbeat")
    assert m.heartbeat("n0", 1.5) == []


def test_leader_grace() -> None:
    # load at t=0 with 5 s grace: node counts as seen at 0 + (5 - 2.5) = 2.5,
    # so it goes offline at 2.5 + 2.5 = 5.0, not at 2.5.
    m = tracker(S.READY)
    assert m.tick(4.9) == []
    [t] = m.tick(5.0)
    assert t.new is S.OFFLINE


def test_silence_then_offline_then_failed_then_back() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 10.0)
    assert m.tick(12.4) == []  # 2.4 s of silence < 2.5
    [t] = m.tick(12.5)
    assert (t.new, "no heartbeat for 2.5s" in t.reason) == (S.OFFLINE, True)
    assert m.tick(72.4) == []  # offline since 12.5; failed at 12.5 + 60 = 72.5
    [t] = m.tick(72.5)
    assert t.new is S.FAILED
    [t] = m.heartbeat("n0", 80.0)
    assert (t.old, t.new) == (S.FAILED, S.READY)


def test_broken_stream_detected_after_grace() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 10.0)
    m.disconnected("n0", 10.2)
    assert m.tick(11.1) == []  # 0.9 s < 1.0 s grace
    [t] = m.tick(11.2)
    assert t.new is S.OFFLINE and "connection lost" in t.reason


def test_reconnect_within_grace_is_not_an_outage() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 10.0)
    m.disconnected("n0", 10.2)
    m.heartbeat("n0", 10.6)
    assert m.tick(11.5) == []


def test_freeze_shorter_than_limit_is_no_false_alarm() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 10.0)
    # a 2 s freeze: heartbeats at 10.0 then 12.0 (stream stays open)
    for t in (10.5, 11.0, 11.5, 12.0):
        assert m.tick(t) == []
    m.heartbeat("n0", 12.0)
    assert m.tick(14.0) == []


def test_cordoned_node_comes_back_cordoned() -> None:
    m = tracker(S.CORDONED)
    m.heartbeat("n0", 10.0)
    [t] = m.tick(12.5)
    assert t.new is S.OFFLINE
    [t] = m.heartbeat("n0", 13.0)
    assert t.new is S.CORDONED


@pytest.mark.parametrize(
    ("nodes", "interval", "offline_after"),
    [
        (100, 0.5, 2.5),  # below 1,250 nodes: base interval
        (1250, 0.5, 2.5),  # 1250 / 2500 = 0.5
        (5000, 2.0, 10.0),  # 5000 / 2500 = 2.0 s; 2.5 * (2.0 / 0.5) = 10 s
    ],
)
def test_interval_stretches_with_size(nodes: int, interval: float, offline_after: float) -> None:
    assert CFG.interval_for(nodes) == pytest.approx(interval)
    assert CFG.offline_after_for(nodes) == pytest.approx(offline_after)


@pytest.mark.parametrize(
    ("nodes", "interval", "offline_after"),
    [
        # the defaults: 2 s heartbeats up to 1,000 nodes (1,000 / 500 per s), backstop 10 s
        (10, 2.0, 10.0),
        (1000, 2.0, 10.0),
        (5000, 10.0, 50.0),  # 5000 / 500 = 10 s; 10 * (10 / 2) = 50 s
    ],
)
def test_default_interval_and_backstop(nodes: int, interval: float, offline_after: float) -> None:
    cfg = MembershipConfig()
    assert cfg.interval_for(nodes) == pytest.approx(interval)
    assert cfg.offline_after_for(nodes) == pytest.approx(offline_after)


def test_node_that_never_reconnects_to_a_new_leader_goes_offline_at_leader_grace() -> None:
    # Defaults: grace 8 s, backstop 10 s. Loaded at t=0: seen at 0 + max(0, 8 - 10) = 0,
    # disconnected at 8 - 0.5 = 7.5, so the disconnect rule fires at 7.5 + 0.5 = 8.0.
    m = Membership(MembershipConfig())
    m.load([Node.make("n0", state=S.READY), Node.make("n1", state=S.READY)], now=0.0)
    m.heartbeat("n1", 3.0)  # n1's agent found the new leader
    assert m.tick(7.9) == []
    [t] = m.tick(8.0)
    assert (t.node_id, t.new, "connection lost" in t.reason) == ("n0", S.OFFLINE, True)
    assert m.tick(12.9) == []  # n1: heard at 3.0, connected, backstop at 13.0


def test_unknown_and_removed_nodes_are_ignored() -> None:
    m = tracker(S.REMOVED)
    assert len(m) == 0
    assert m.heartbeat("n0", 1.0) == []
    assert m.heartbeat("ghost", 1.0) == []


def test_goodbye_holds_the_node_until_it_is_back_or_the_hold_ends() -> None:
    m = tracker(S.READY, S.READY)
    m.heartbeat("n0", 10.0)
    m.heartbeat("n1", 10.0)
    assert m.goodbye("n0", 10.1, 30.0) == 30.0  # a clean stop: back within 30 s
    m.disconnected("n0", 10.2)
    m.disconnected("n1", 10.2)  # n1 was killed: no goodbye
    [t] = m.tick(11.2)  # 1.0 s grace
    assert t.node_id == "n1" and t.new is S.OFFLINE
    assert m.tick(40.0) == []  # n0 held until 10.1 + 30 = 40.1
    [t] = m.tick(40.1)
    assert t.node_id == "n0" and "connection lost" in t.reason


def test_goodbye_is_capped_and_cleared_by_the_next_heartbeat() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 10.0)
    assert m.goodbye("n0", 10.0, 10_000.0) == Membership.MAX_HOLD_S
    m.heartbeat("n0", 12.0)  # back: the hold is over
    m.disconnected("n0", 13.0)
    [t] = m.tick(14.0)
    assert t.new is S.OFFLINE


def test_a_leaving_node_whose_stream_ends_departs_not_offline() -> None:
    from cloudless.model.departure import Departure, DepartureKind

    m = Membership(CFG)
    leave = Departure(DepartureKind.LEAVE, "lid closing", 0.0, 300.0)
    m.load([Node.make("n0", state=S.DRAINING, departure=leave), Node.make("n1", state=S.READY)], 0)
    m.heartbeat("n0", 1.0)
    m.heartbeat("n1", 1.0)
    m.disconnected("n0", 2.0)
    m.disconnected("n1", 2.0)
    # grace 1 s: at 3.0 both streams have been gone long enough
    got = {t.node_id: (t.new, t.reason) for t in m.tick(3.0)}
    assert got["n0"] == (S.DEPARTED, "left as announced")
    assert got["n1"][0] is S.OFFLINE
    # departed is not watched: no failed 60 s later
    assert [t.node_id for t in m.tick(100.0)] == ["n1"]
    # it comes back ready
    [back] = m.heartbeat("n0", 200.0)
    assert (back.old, back.new) == (S.DEPARTED, S.READY)


def test_leaving_told_before_the_record_says_so() -> None:
    m = tracker(S.READY)
    m.heartbeat("n0", 1.0)
    m.leaving("n0")
    m.disconnected("n0", 2.0)
    [t] = m.tick(3.0)
    assert t.new is S.DEPARTED
