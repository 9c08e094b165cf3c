import pytest

from cloudless.model.node import Node, NodeConditions, NodeState, transition
from cloudless.model.reliability import (
    ReliabilityComponents,
    reliability_score,
    response_component,
)
from cloudless.model.resources import Resources

S = NodeState


@pytest.mark.parametrize(
    ("current", "target", "ok"),
    [
        (S.ENROLLING, S.READY, True),  # first heartbeat
        (S.READY, S.OFFLINE, True),  # missed heartbeats
        (S.OFFLINE, S.FAILED, True),  # longer grace
        (S.OFFLINE, S.READY, True),  # came back
        (S.FAILED, S.READY, True),
        (S.READY, S.CORDONED, True),
        (S.CORDONED, S.READY, True),
        (S.READY, S.DRAINING, True),
        (S.DRAINING, S.CORDONED, True),
        (S.READY, S.READY, True),  # no-op
        (S.ENROLLING, S.CORDONED, False),
        (S.ENROLLING, S.DRAINING, False),
        (S.FAILED, S.OFFLINE, False),
        (S.FAILED, S.DRAINING, False),
        (S.REMOVED, S.READY, False),
        (S.READY, S.ENROLLING, False),
        (S.CORDONED, S.REMOVED, True),
    ],
)
def test_transition_table(current: NodeState, target: NodeState, ok: bool) -> None:
    t = transition(current, target)
    assert t.ok is ok
    if ok:
        assert t.state is target
    else:
        assert t.state is current
        assert t.reason  # every "no" carries a reason


def test_removed_reason_says_what_to_do() -> None:
    assert "new token" in transition(S.REMOVED, S.READY).reason


def test_node_roundtrip_and_labels() -> None:
    n = Node.make(
        "n1",
        labels={"gpu": "yes"},
        zone="eu-1a",
        region="eu",
        capacity=Resources(4000, 8 << 30, 100 << 30, 10**9),
        conditions=NodeConditions(memory_pressure=True),
    )
    assert Node.from_dict(n.to_dict()) == n
    assert n.label("gpu") == "yes"
    assert n.label("zone") == "eu-1a"
    assert n.label("node") == "n1"
    assert n.label("missing") is None
    assert n.conditions.active() == ["MemoryPressure"]


def test_reliability_weights() -> None:
    # 0.30*1 + 0.20*0.5 + 0.20*1 + 0.15*0 + 0.15*1 = 0.30 + 0.10 + 0.20 + 0 + 0.15 = 0.75
    c = ReliabilityComponents(uptime=1, response=0.5, success=1, capacity=0, stability=1)
    assert reliability_score(c) == pytest.approx(0.75)
    assert reliability_score(ReliabilityComponents()) == pytest.approx(1.0)
    # components are clipped to [0, 1]
    assert reliability_score(ReliabilityComponents(uptime=5)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("latency", "target", "expected"),
    [(0.05, 0.1, 1.0), (0.1, 0.1, 1.0), (0.55, 0.1, 0.5), (1.0, 0.1, 0.0), (5.0, 0.1, 0.0)],
    # (0.55 - 0.1) / (9 * 0.1) = 0.45 / 0.9 = 0.5 -> 1 - 0.5 = 0.5
)
def test_response_component(latency: float, target: float, expected: float) -> None:
    assert response_component(latency, target) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("current", "target", "becomes", "why"),
    [
        (NodeState.READY, NodeState.CORDONED, NodeState.CORDONED, ""),  # a change
        (NodeState.READY, NodeState.READY, None, ""),  # already there: nothing to write
        (NodeState.REMOVED, NodeState.READY, None, "node was removed"),  # refused, with why
    ],
)
def test_moved_to(
    current: NodeState, target: NodeState, becomes: NodeState | None, why: str
) -> None:
    new, reason = Node.make("n1", state=current).moved_to(target)
    assert (new.state if new else None) == becomes
    assert reason.startswith(why) and bool(reason) == bool(why)
