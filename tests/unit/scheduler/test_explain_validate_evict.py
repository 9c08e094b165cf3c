"""explain, validate_placeable and choose_replicas_to_stop."""

from __future__ import annotations

from cloudless.model.node import NodeState
from cloudless.scheduler import (
    Snapshot,
    choose_replicas_to_stop,
    explain,
    validate_placeable,
    with_spread,
)
from cloudless.scheduler.testing import anti, node, replica, sel, spec


def test_explain_lists_best_nodes_and_reasons() -> None:
    nodes = [
        node("a", reliability=0.9),
        node("b", reliability=0.7),
        node("c", cpu="1"),
        node("d", state=NodeState.OFFLINE),
    ]
    ex = explain(Snapshot.build(nodes), spec(cpu="2"), top=1)
    assert [b.node_id for b in ex.best] == ["a"]
    assert ex.rejections.message() == "2/4 nodes fit: 1 insufficient cpu, 1 offline"
    text = ex.render()
    assert "reliability=0.90" in text and "2/4 nodes fit" in text


def test_validate_accepts_placeable_spec() -> None:
    assert validate_placeable(spec(replicas=3), Snapshot.build([node("a")])) == []


def test_validate_ignores_state_and_current_load() -> None:
    # cordoned and full today, but could run it later -> not a validation error
    snap = Snapshot.build(
        [node("a", state=NodeState.CORDONED)], [replica("x0", "x", "a")], {"x": spec("x", cpu="4")}
    )
    assert validate_placeable(spec(cpu="2"), snap) == []


def test_validate_rejects_what_can_never_fit() -> None:
    snap = Snapshot.build([node("a", zone="z1"), node("b", zone="z2")])
    (p,) = validate_placeable(spec("big", cpu="16"), snap)
    assert p.startswith("spec.resources: no node can ever run big (0/2 nodes fit: 2 cpu")
    (p,) = validate_placeable(spec("eu", node_selector=(sel("zone", "in", "eu-1a"),)), snap)
    assert "2 zone not in [eu-1a]" in p and p.startswith("spec.placement")
    (p,) = validate_placeable(spec("w", replicas=3, max_per_node=1), snap)
    assert p.startswith("spec.replicas: 3 replicas at max_per_node 1 need 3 nodes but only 2")
    s = spec("w", replicas=3, required_workload_affinity=(anti("w", "zone"),))
    (p,) = validate_placeable(s, snap)
    assert "one replica per zone needs 3 zones but only 2" in p


def test_validate_empty_cluster_is_not_judged() -> None:
    assert validate_placeable(spec(cpu="100"), Snapshot.build([])) == []


def test_stop_unassigned_then_bad_nodes_then_lowest_score() -> None:
    nodes = [
        node("good", reliability=1.0),
        node("ok", reliability=0.6),
        node("off", state=NodeState.OFFLINE),
    ]
    s = spec("w")
    reps = [
        replica("r1", "w", "good"),
        replica("r2", "w", "ok"),
        replica("r3", "w", "off"),
        replica("r4", "w", ""),
    ]
    snap = Snapshot.build(nodes, reps, {"w": s})
    stop = choose_replicas_to_stop(snap, s, reps, keep=1)
    assert [r.id for r in stop] == ["r4", "r3", "r2"]
    assert choose_replicas_to_stop(snap, s, reps, keep=4) == []


def test_stop_keeps_spread_even() -> None:
    # z1 holds 3, z2 holds 1: stopping 2 takes both from z1 -> 1 + 1
    nodes = [node("a", zone="z1"), node("b", zone="z1"), node("c", zone="z2")]
    s = with_spread(spec("w"), "zone")
    reps = [
        replica("r1", "w", "a"),
        replica("r2", "w", "a"),
        replica("r3", "w", "b"),
        replica("r4", "w", "c"),
    ]
    snap = Snapshot.build(nodes, reps, {"w": s})
    stop = choose_replicas_to_stop(snap, s, reps, keep=2)
    assert len(stop) == 2 and "r4" not in {r.id for r in stop}


def test_explain_notes_spread_preference() -> None:
    nodes = [node("a", zone="z1"), node("b", zone="z2")]
    s = spec("w", spread=(with_spread(spec(), "zone").placement.spread[0],))
    snap = Snapshot.build(nodes, [replica("r", "w", "a")], {"w": s})
    ex = explain(snap, s)
    assert ex.rejections.fit == 1  # a would make z1 2 vs 0 > max_skew
    assert [b.node_id for b in ex.best] == ["b"]
