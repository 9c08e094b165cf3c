"""Score factors, with the arithmetic beside each row.

Builder defaults: node 4 cpu / 8Gi / 100Gi disk / 1Gbps, reliability 1.0, cost 0, not
public, behind NAT; default weights 0.25 locality, 0.30 reliability, 0.15 cost,
0.20 utilization, 0.10 network.
"""

from __future__ import annotations

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.workload import AffinityTerm, WorkloadAffinity
from cloudless.scheduler import Scheduler, SchedulerConfig, Snapshot
from cloudless.scheduler.config import normalize_weights
from cloudless.scheduler.registry import FACTOR_NAMES
from cloudless.scheduler.testing import node, replica, sel, spec


def comps(nodes, s, replicas=(), config=None):  # type: ignore[no-untyped-def]
    snap = Snapshot.build(nodes, replicas, {"x": spec("x", cpu="1", memory="1Gi")})
    ex = Scheduler(config).explain(snap, s, top=len(nodes))
    return {ns.node_id: ns.components for ns in ex.best}


CASES = [
    # (id, node kwargs, spec kwargs, factor, expected)
    ("locality neutral", {}, {}, "locality", 0.5),
    ("locality preferred zone", {"zone": "z1"}, {"preferred_zones": ("z1",)}, "locality", 1.0),
    (
        "locality preferred region only",
        {"zone": "z2", "region": "r1"},
        {"preferred_zones": ("z1",), "preferred_regions": ("r1",)},
        "locality",
        0.75,
    ),
    ("locality elsewhere", {"zone": "z2"}, {"preferred_zones": ("z1",)}, "locality", 0.0),
    ("reliability", {"reliability": 0.8}, {}, "reliability", 0.8),
    # cost 0 -> 0.5 * 1; shares 1/4 cpu, 2/8 mem -> shape 1 -> 0.5 + 0.5 = 1.0
    ("cost matched shape", {}, {"cpu": "1", "memory": "2Gi"}, "cost", 1.0),
    # shares 0.25 cpu vs 0.5 mem -> shape 0.75 -> 0.5 + 0.375 = 0.875
    ("cost mismatched shape", {}, {"cpu": "1", "memory": "4Gi"}, "cost", 0.875),
    # f = (0.25, 0.25, 0) -> balance 1 - 0.25 = 0.75, headroom 1 - 0.5/3 = 0.8333
    # U = 0.5 * 0.75 + 0.5 * 0.8333 = 0.79167
    (
        "utilization",
        {},
        {"cpu": "1", "memory": "2Gi"},
        "utilization",
        0.5 * 0.75 + 0.5 * (1 - 0.5 / 3),
    ),
    # 1Gbps / max(0, 1Gbps) = 1; no ports -> reach 1 -> 0.7 + 0.3 = 1.0
    ("network plain", {}, {}, "network", 1.0),
    # serves ports, not public, behind NAT -> reach 0 -> 0.7 * 1 + 0 = 0.7
    ("network serving behind NAT", {}, {"ports": (80,)}, "network", 0.7),
    # public, no NAT -> reach 1; 100Mbps / 1Gbps = 0.1 -> 0.07 + 0.3 = 0.37
    (
        "network public slow link",
        {"public": True, "nat": False, "bandwidth": "100Mbps"},
        {"ports": (80,)},
        "network",
        0.37,
    ),
]


@pytest.mark.parametrize(
    ("node_kw", "spec_kw", "factor", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_factor_table(node_kw, spec_kw, factor, expected) -> None:  # type: ignore[no-untyped-def]
    c = comps([node("a", **node_kw)], spec(**spec_kw))["a"]
    assert c[factor] == pytest.approx(expected)


def test_total_is_weighted_sum() -> None:
    # L 0.5, R 1, C 1, U 0.79167, N 1:
    # 0.25*0.5 + 0.30*1 + 0.15*1 + 0.20*0.79167 + 0.10*1 = 0.83333
    c = comps([node("a")], spec(cpu="1", memory="2Gi"))["a"]
    assert c.total == pytest.approx(0.125 + 0.3 + 0.15 + 0.2 * 0.791666 + 0.1, abs=1e-5)
    assert c.affinity == 0.0


def test_cost_normalised_by_most_expensive_node() -> None:
    # cost_norm a = 1/2, b = 2/2 -> cost = 0.5 * (1 - 0.5) + 0.5 = 0.75 and 0.5 + 0 = 0.5
    c = comps(
        [node("a", cost_per_hour=1.0), node("b", cost_per_hour=2.0)], spec(cpu="1", memory="2Gi")
    )
    assert c["a"]["cost"] == pytest.approx(0.75)
    assert c["b"]["cost"] == pytest.approx(0.5)


def test_preferred_node_affinity_adjusts() -> None:
    # weights 60 (matches on a) + 40 (matches on b) -> a: 0.2 * 60/100 = 0.12, b: 0.08
    terms = (
        AffinityTerm((sel("zone", "=", "z1"),), 60),
        AffinityTerm((sel("zone", "=", "z2"),), 40),
    )
    c = comps([node("a", zone="z1"), node("b", zone="z2")], spec(preferred_node_affinity=terms))
    assert c["a"].affinity == pytest.approx(0.12)
    assert c["b"].affinity == pytest.approx(0.08)


def test_preferred_workload_anti_affinity_adjusts() -> None:
    # anti weight 50 to x on node a -> -0.1 * 0.5 = -0.05 on a, 0 on b
    pref = (WorkloadAffinity("x", "node", anti=True, weight=50),)
    c = comps(
        [node("a"), node("b")], spec(preferred_workload_affinity=pref), [replica("x0", "x", "a")]
    )
    assert c["a"].affinity == pytest.approx(-0.05)
    assert c["b"].affinity == 0.0


def test_weights_are_normalised() -> None:
    # {locality: 1, reliability: 1, others 0} -> 0.5 / 0.5
    w = normalize_weights(
        {"locality": 1, "reliability": 1, "cost": 0, "utilization": 0, "network": 0}, FACTOR_NAMES
    )
    assert w == (0.5, 0.5, 0.0, 0.0, 0.0)
    # defaults already sum to 1
    assert sum(normalize_weights({}, FACTOR_NAMES)) == pytest.approx(1.0)
    # only reliability counts: total = R
    c = comps(
        [node("a", reliability=0.6)],
        spec(),
        config=SchedulerConfig(
            weights={"locality": 0, "reliability": 2, "cost": 0, "utilization": 0, "network": 0}
        ),
    )
    assert c["a"].total == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"speed": 1.0}, "scheduler.weights.speed: unknown factor"),
        ({"cost": -1.0}, "scheduler.weights.cost: must be >= 0"),
        (dict.fromkeys(FACTOR_NAMES, 0.0), "at least one weight must be > 0"),
    ],
)
def test_bad_weights(weights, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=message):
        Scheduler(SchedulerConfig(weights=weights))


def test_locality_hint() -> None:
    # no preferences -> 0.5; hint 0.9 on b raises it to 0.9
    snap = Snapshot.build([node("a"), node("b")])
    s = Scheduler(locality_hint=lambda spec: {"b": 0.9})
    best = {n.node_id: n.components["locality"] for n in s.explain(snap, spec()).best}
    assert best == {"a": 0.5, "b": 0.9}
