"""The churn policy (``members.decide``) and presence tracking, as tables."""

from __future__ import annotations

import pytest

from cloudless.lib.errors import Conflict
from cloudless.objectstore import history as h
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.members import (
    Change,
    Decision,
    Presence,
    StorageNode,
    absent_nodes,
    actor,
    decide,
    default_grace,
)
from cloudless.objectstore.testing import finished, synced

GiB = 1 << 30


def node(name: str, zone: str, cap: int = GiB, beat: int = 1) -> StorageNode:
    return StorageNode(name, zone, cap, f"https://{name}:3901", f"http://{name}:3900", beat)


def registry(*nodes: StorageNode) -> dict[str, StorageNode]:
    return {n.name: n for n in nodes}


def layout(*nodes: StorageNode, replication: int = 3) -> h.LayoutHistory:
    hist = h.stage_replication(h.LayoutHistory(), replication)
    for n in nodes:
        hist = h.stage(hist, n.name, NodeRole(n.zone, n.capacity))
    return h.apply(hist, 0)[0]


A, B, C, D = node("a", "z1"), node("b", "z2"), node("c", "z3"), node("d", "z1")

CASES: list[tuple[str, h.LayoutHistory, dict[str, StorageNode], set[str], int, str, dict]] = [
    # (id, history, registry, absent, R, expected why, expected role changes)
    # no layout, 2 of the 3 nodes R=3 needs -> wait
    (
        "first waits",
        h.LayoutHistory(),
        registry(A, B),
        set(),
        3,
        "waiting for 3 storage nodes before the first layout (2 registered)",
        {},
    ),
    # no layout, 3 present -> first layout with all three
    (
        "first layout",
        h.LayoutHistory(),
        registry(A, B, C),
        set(),
        3,
        "first layout",
        {"a": A.role, "b": B.role, "c": C.role},
    ),
    # a gateway does not count toward the first layout (capacity 0)
    (
        "gateway not counted",
        h.LayoutHistory(),
        registry(A, B, node("g", "z9", 0)),
        set(),
        3,
        "waiting for 3 storage nodes before the first layout (2 registered)",
        {},
    ),
    # d registered, not in the layout, present -> added
    ("join", layout(A, B, C), registry(A, B, C, D), set(), 3, "add d", {"d": D.role}),
    # d registered but already absent (silent) -> not added
    (
        "absent not added",
        layout(A, B, C),
        registry(A, B, C, D),
        {"d"},
        3,
        "layout matches the registered nodes",
        {},
    ),
    # c changed capacity -> re-staged with the new role
    (
        "capacity change",
        layout(A, B, C),
        registry(A, B, node("c", "z3", 2 * GiB)),
        set(),
        3,
        "add c",
        {"c": NodeRole("z3", 2 * GiB)},
    ),
    # 4 nodes, d absent past the grace -> removed (3 left >= R)
    ("replace", layout(A, B, C, D), registry(A, B, C, D), {"d"}, 3, "replace d", {"d": None}),
    # 3 nodes at R=3, c absent -> removing it would leave 2 < 3: no change, with the reason
    (
        "too few to replace",
        layout(A, B, C),
        registry(A, B, C),
        {"c"},
        3,
        "c absent past the grace period, but removing it would leave fewer than 3 storage nodes",
        {},
    ),
    # everything in place
    (
        "steady",
        layout(A, B, C),
        registry(A, B, C),
        set(),
        3,
        "layout matches the registered nodes",
        {},
    ),
]


@pytest.mark.parametrize(
    "hist,nodes,absent,r,why,roles", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(
    hist: h.LayoutHistory,
    nodes: dict[str, StorageNode],
    absent: set[str],
    r: int,
    why: str,
    roles: dict[str, NodeRole | None],
) -> None:
    d = decide(hist, nodes, absent, r)
    assert d.why == why
    assert (d.change.roles if d.change else {}) == roles


def test_nothing_during_a_transition_or_with_staged_changes() -> None:
    v1 = layout(A, B, C)
    v2 = h.apply(h.stage(v1, "d", D.role), 1)[0]  # d has not synced: two live versions
    assert decide(v2, registry(A, B, C, D), set(), 3) == Decision(
        None, "layout v2 is still syncing"
    )
    synced = finished(v2, 2, ["a"])  # a is done with v2: its absence does not block v2
    assert decide(synced, registry(A, B, C, D), {"a"}, 3).why == "layout v2 is still syncing"
    staged = h.stage(v1, "e", NodeRole("z4", GiB))
    assert decide(staged, registry(A, B, C, D), set(), 3).why == (
        "an operator staged a change: apply or revert it"
    )


def test_the_change_applies_and_moves_only_the_lost_copies() -> None:
    v1 = layout(A, B, C, D)
    d = decide(v1, registry(A, B, C, D), {"d"}, 3)
    assert d.change is not None
    hist = v1
    for n, role in d.change.roles.items():
        hist = h.stage(hist, n, role)
    _, plan = h.apply(hist, 1)
    # d held 128 copies (z1 shared by a and d: 256 / 2); each moves to a, the only other
    # z1 node -> exactly 128 moves, all to a
    assert len(plan.moves) == v1.current.counts()["d"] == 128  # type: ignore[union-attr]
    assert {n for _, n in plan.moves} == {"a"}


def test_presence_times_silence_on_the_observers_clock() -> None:
    p = Presence()
    p.observe(registry(node("a", "z1", beat=1), node("b", "z2", beat=1)), now=100.0)
    p.observe(registry(node("a", "z1", beat=2), node("b", "z2", beat=1)), now=105.0)
    # a beat at 105 -> silent 5 s at 110; b unchanged since 100 -> silent 10 s
    assert p.silent_for("a", 110.0) == 5.0 and p.silent_for("b", 110.0) == 10.0
    assert p.silent_for("never", 110.0) == float("inf")
    assert absent_nodes(p, {"a", "b"}, 110.0, grace=10.0) == {"b"}
    # b deregistered -> forgotten
    p.observe(registry(node("a", "z1", beat=3)), now=111.0)
    assert "b" not in p.seen


def test_one_actor_the_smallest_present_storage_node() -> None:
    nodes = registry(A, B, node("0gw", "z0", 0))
    assert actor(nodes, set()) == "a"  # the gateway "0gw" sorts first but stores nothing
    assert actor(nodes, {"a"}) == "b"
    assert actor(nodes, {"a", "b"}) is None


def test_grace_defaults_follow_the_issue() -> None:
    assert default_grace(3) == 15 * 60 and default_grace(2) == 5 * 60


def test_a_node_an_operator_removed_stays_out_while_registered() -> None:
    """An operator's removal sticks: the node, still registered and present (running, or
    stopped less than the grace period ago), is not added back by the policy; staging a role
    for it lifts that. A node the policy itself replaced is added again when it returns."""
    v1 = layout(A, B, C, D)
    v2 = h.apply(h.stage(v1, "d", None), 1)[0]
    assert v2.removed == {"d"}
    v2 = finished(v2, 2, ["a", "b", "c"])
    assert len(v2.versions) == 1
    assert decide(v2, registry(A, B, C, D), set(), 3) == Decision(
        None, "layout matches the registered nodes"
    )
    back = h.apply(h.stage(v2, "d", D.role), 2)[0]  # the operator adds it again
    assert back.removed == frozenset() and "d" in back.current.roles  # type: ignore[union-attr]

    replaced = h.apply(h.stage(v1, "d", None), 1, operator=False)[0]  # the policy's own change
    assert replaced.removed == frozenset()
    replaced = finished(replaced, 2, ["a", "b", "c"])
    d = decide(replaced, registry(A, B, C, D), set(), 3)
    assert d.change is not None and d.change.roles == {"d": D.role}


def test_a_node_that_dies_mid_transition_is_replaced_and_the_transition_abandoned() -> None:
    """d joins (v2) and dies before syncing: past the grace period it is replaced (v3 without
    it, v2 abandoned), reads stay on v1 until v3 has synced, then v3 alone is live. Without
    this the layout waited for d for good: no replacement, no operator apply."""
    v1 = layout(A, B, C, node("e", "z2"))
    v2 = h.apply(h.stage(v1, "d", D.role), 1)[0]
    v2 = synced(v2, 2, ["a", "b"])  # a, b synced; c, e, d not yet
    nodes = registry(A, B, C, D, node("e", "z2"))
    assert decide(v2, nodes, set(), 3).why == "layout v2 is still syncing"
    d = decide(v2, nodes, {"d"}, 3)
    assert d.change == Change({"d": None}, None, "replace d, which v2 waits for")
    with_staged = h.stage(v2, "f", NodeRole("z4", GiB))  # an operator's staging comes first
    assert decide(with_staged, nodes, {"d"}, 3).why == "layout v2 is still syncing"

    v3 = h.apply(h.stage(v2, "d", None), 2, operator=False)[0]
    assert [v.version for v in v3.versions] == [1, 3]  # v2 abandoned
    assert v3.read_version() is v3.versions[0] and v3.removed == frozenset()
    assert "d" not in {n for p in v3.current.partitions for n in p}  # type: ignore[union-attr]
    v3 = synced(v3, 3, ["a", "b", "c", "e"])
    assert [v.version for v in v3.versions] == [1, 3]  # until every node reads from v3
    v3 = finished(v3, 3, ["a", "b", "c", "e"])
    assert [v.version for v in v3.versions] == [3]

    # only a removal of a node v2 waits for may cut a transition short
    with pytest.raises(Conflict, match="still syncing on c, d, e"):
        h.apply(h.stage(v2, "a", None), 2)
    # and never below R storage nodes
    bigger = h.apply(h.stage(layout(A, B, C), "c", NodeRole("z3", 2 * GiB)), 1)[0]
    assert "would leave fewer than 3" in decide(bigger, registry(A, B, C), {"c"}, 3).why
