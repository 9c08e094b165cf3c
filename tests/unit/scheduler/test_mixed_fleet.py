"""Mixed fleets and constrained plans: the packers' bin order, the plan search's repairs,
validate/place agreement on nodes without a topology label, spread's eligible domains, and
how a workload or the cluster chooses the strategy. Arithmetic beside each case."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.workload import WorkloadAffinity
from cloudless.scheduler import (
    Scheduler,
    SchedulerConfig,
    Snapshot,
    Strategy,
    pack,
    pack_best_fit,
    validate_placeable,
)
from cloudless.scheduler.context import WorkState
from cloudless.scheduler.engine import place_group
from cloudless.scheduler.testing import node, sel, spec
from cloudless.scheduler.testing import spread as spread_c

PHONE = {"cpu": "2", "memory": "4Gi"}
LAPTOP = {"cpu": "8", "memory": "16Gi"}
SERVER = {"cpu": "32", "memory": "128Gi"}
VPS = {"cpu": "1", "memory": "1Gi"}


def fleet(*shapes: dict[str, str], **kw: object) -> list[object]:
    return [node(f"n{i}", **s, **kw) for i, s in enumerate(shapes)]  # type: ignore[arg-type]


@pytest.mark.parametrize("packer", [pack, pack_best_fit])
@pytest.mark.parametrize(
    ("groups", "used"),
    [
        # 12 x (1 cpu, 2Gi) = 12 cpu / 24Gi: only the server (32/128) holds them all -> 1 node
        # (opening by score, phones and laptops first, took 3: laptop 8 + phone 2 + phone 2)
        ([(("w", "1", "2Gi"), 12)], {"n2"}),
        # 2 x (500m, 512Mi) = 1 cpu / 1Gi: the smallest node holding the whole plan is the
        # VPS (1 cpu / 1Gi) -> the server stays empty
        ([(("w", "500m", "512Mi"), 2)], {"n3"}),
        # 8 x (4 cpu, 4Gi) = 32 cpu: the server (biggest) first, it holds all 8 -> 1 node
        ([(("a", "4", "4Gi"), 4), (("b", "4", "4Gi"), 4)], {"n2"}),
    ],
)
def test_packers_open_big_devices_first(packer: object, groups: list, used: set[str]) -> None:
    snap = Snapshot.build(fleet(PHONE, LAPTOP, SERVER, VPS, PHONE, LAPTOP))
    g = [(spec(n, cpu=c, memory=m), k) for (n, c, m), k in groups]
    plan = packer(snap, g)  # type: ignore[operator]
    assert plan.complete and plan.nodes_used() == used


def _greedy_only(snap: Snapshot, s: object, count: int) -> int:
    """Replicas the first greedy pass places (no repair)."""
    ws = WorkState(snap)
    cfg = Scheduler().config
    got, _ = place_group(
        ws,
        s,  # type: ignore[arg-type]
        count,
        0,
        config=cfg,
        weights=Scheduler().weights,
        rng=random.Random(0),
        strategy=Strategy.SCORE,
    )
    return len(got)


def test_repair_self_affinity_not_trapped_on_a_small_device() -> None:
    # 4 x (1 cpu, 1Gi), all on one node. The phone (2/4, reliability 1.0) scores above the
    # server (32/128, reliability 0.3), so the greedy first replica lands on the phone and
    # only 2 fit there; the repair pins the group to its roomiest node, the server (32).
    nodes = [
        node("phone", **PHONE, reliability=1.0),
        node("server", **SERVER, reliability=0.3),
    ]
    s = spec(
        "g", cpu="1", memory="1Gi", required_workload_affinity=(WorkloadAffinity("g", "node"),)
    )
    snap = Snapshot.build(nodes)
    assert _greedy_only(snap, s, 4) == 2
    plan = Scheduler().place(snap, s, 4)
    assert plan.complete and plan.nodes_used() == {"server"}


def test_repair_selector_and_anti_affinity() -> None:
    # big (2 cpu) goes first (larger) and takes "a", the best-scored node; small may only
    # run on "a" (ssd) and refuses big's node -> unplaced. Repair: small first -> a, big -> b.
    nodes = [
        node("a", labels={"ssd": "1"}, reliability=1.0),
        node("b", reliability=0.5),
    ]
    big = spec("big", cpu="2")
    small = spec(
        "small",
        cpu="500m",
        node_selector=(sel("ssd", "exists"),),
        required_workload_affinity=(WorkloadAffinity("big", "node", anti=True),),
    )
    plan = Scheduler().schedule_many(Snapshot.build(nodes), [(big, 1), (small, 1)])
    assert plan.complete
    assert {a.workload: a.node_id for a in plan.assignments} == {"small": "a", "big": "b"}


def test_repair_keeps_first_plan_reasons_when_nothing_fits() -> None:
    # 3 x 4 cpu on two 4-cpu nodes: no placement holds all 3 -> the first plan, its reasons
    plan = Scheduler().place(Snapshot.build(fleet({"cpu": "4"}, {"cpu": "4"})), spec(cpu="4"), 3)
    assert len(plan.assignments) == 2
    assert plan.unplaced[0].reason == "0/2 nodes fit: 2 insufficient cpu"


ANTI_ZONE = (WorkloadAffinity("w", "zone", anti=True),)


@pytest.mark.parametrize(
    ("replicas", "problems", "placed", "reason"),
    [
        # zones z1, z2 and one node without a zone: 2 replicas, one per zone -> both agree
        (2, 0, 2, ""),
        # 3 replicas need 3 zones; the unlabelled node is in no zone -> refused by both
        (3, 1, 2, "no zone label"),
    ],
)
def test_validate_and_place_agree_on_nodes_without_the_key(
    replicas: int, problems: int, placed: int, reason: str
) -> None:
    nodes = [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="")]
    s = spec("w", replicas=replicas, required_workload_affinity=ANTI_ZONE)
    snap = Snapshot.build(nodes)
    assert len(validate_placeable(s, snap)) == problems
    plan = Scheduler().place(snap, s, replicas)
    assert len(plan.assignments) == placed
    assert "c" not in plan.nodes_used()
    if reason:
        assert reason in plan.unplaced[0].reason


def test_spread_ignores_a_zone_that_can_never_hold_a_replica() -> None:
    # 2-cpu replicas; z3's only node has 1 cpu, so z3 can never hold one and must not pin
    # the minimum at 0: z1 (2 x 4 cpu = 4 replicas) and z2 (4 cpu = 2) take 2 + 2
    nodes = [
        node("a", zone="z1"),
        node("b", zone="z1"),
        node("c", zone="z2"),
        node("d", zone="z3", cpu="1"),
    ]
    s = spec("w", cpu="2", spread=(spread_c("zone"),))
    plan = Scheduler().place(Snapshot.build(nodes), s, 4)
    assert plan.complete
    zone = {x.id: x.zone for x in nodes}
    assert Counter(zone[a.node_id] for a in plan.assignments) == {"z1": 2, "z2": 2}


@pytest.mark.parametrize(
    ("cluster", "field", "used"),
    [
        # 3 x 1 cpu on three 4-cpu nodes
        (Strategy.SCORE, "pack", 1),  # the spec's pack: all 3 on one node (3 <= 4)
        (Strategy.FIRST_FIT, "", 1),  # the cluster's default: pack
        (Strategy.FIRST_FIT, "spread", 3),  # the spec's spread wins: one per node
        (Strategy.SPREAD, "", 3),  # the cluster's spread
        (Strategy.SPREAD, "best_fit", 1),
    ],
)
def test_strategy_from_spec_or_cluster(cluster: Strategy, field: str, used: int) -> None:
    snap = Snapshot.build(fleet({"cpu": "4"}, {"cpu": "4"}, {"cpu": "4"}))
    s = spec("w", cpu="1", strategy=field)
    plan = Scheduler(SchedulerConfig(strategy=cluster)).place(snap, s, 3)
    assert plan.complete and len(plan.nodes_used()) == used


@pytest.mark.parametrize(
    ("text", "strategy", "weights"),
    [
        ("", Strategy.SCORE, {"reliability": 0.30}),
        ("strategy=pack", Strategy.FIRST_FIT, {}),
        ("strategy=best-fit, reliability=0.6", Strategy.BEST_FIT, {"reliability": 0.6}),
        ("locality=0,cost=0,utilization=0,network=0", Strategy.SCORE, {"locality": 0.0}),
    ],
)
def test_scheduler_config_parse(text: str, strategy: Strategy, weights: dict[str, float]) -> None:
    c = SchedulerConfig.parse(text)
    assert c.strategy is strategy
    for k, v in weights.items():
        assert c.weights[k] == v


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strategy=fastest", "--scheduler.strategy: unknown strategy 'fastest'"),
        ("speed=1", "--scheduler: unknown key 'speed'"),
        ("cost", "--scheduler: 'cost': expected KEY=VALUE"),
        ("cost=-1", "--scheduler.cost: expected a weight from 0 to 1000"),
        ("cost=lots", "--scheduler.cost: expected a weight from 0 to 1000"),
        ("cost=1e9", "--scheduler.cost: expected a weight from 0 to 1000"),
        (
            "locality=0,reliability=0,cost=0,utilization=0,network=0",
            "scheduler.weights: at least one weight must be > 0",
        ),
    ],
)
def test_scheduler_config_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        SchedulerConfig.parse(text)
    assert message in str(e.value)
