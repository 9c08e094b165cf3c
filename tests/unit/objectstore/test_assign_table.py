"""Worked examples for the layout decider, with the arithmetic beside each case."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import pytest

from cloudless.objectstore.assign import assign, round_sticky, waterfill
from cloudless.objectstore.layout import LayoutError, NodeRole, partition_of


def roles(*specs: tuple[str, str, int]) -> dict[str, NodeRole]:
    return {n: NodeRole(z, c) for n, z, c in specs}


CASES = [
    # (id, roles, R, expected counts)
    # one zone, R=1, capacities 1:3 -> 256 * 1/4 = 64 and 256 * 3/4 = 192
    ("proportional", roles(("a", "z", 1), ("b", "z", 3)), 1, {"a": 64, "b": 192}),
    # one zone, R=2, 1:1:2 -> ideal 128, 128, 256 (512 * 2/4; 256 is the one-copy cap)
    (
        "node cap exact",
        roles(("a", "z", 1), ("b", "z", 1), ("c", "z", 2)),
        2,
        {"a": 128, "b": 128, "c": 256},
    ),
    # one zone, R=2, 1:1:6 -> c wants 384 but holds a partition once: capped at 256,
    # the other 256 split 1:1 -> 128 each
    (
        "node cap binds",
        roles(("a", "z", 1), ("b", "z", 1), ("c", "z", 6)),
        2,
        {"a": 128, "b": 128, "c": 256},
    ),
    # 3 zones, R=3: each zone holds one copy of every partition whatever its capacity
    (
        "zone cap binds",
        roles(("a", "x", 100), ("b", "y", 1), ("c", "w", 1)),
        3,
        {"a": 256, "b": 256, "c": 256},
    ),
    # 2 zones, R=3: redundancy 2, a zone holds at most 2 copies of a partition (cap 512);
    # x has 3/4 of the capacity -> wants 576, capped at 512; y gets 256 split 1:1 -> 128
    (
        "two zones R3",
        roles(("a", "x", 3), ("a2", "x", 3), ("b", "y", 1), ("b2", "y", 1)),
        3,
        {"a": 256, "a2": 256, "b": 128, "b2": 128},
    ),
    # 3 nodes 1:1:1, R=2 -> 512/3 = 170.67 each: two get 171, one 170 (largest remainder,
    # ties by name: a and b round up)
    (
        "rounding",
        roles(("a", "z", 1), ("b", "z", 1), ("c", "z", 1)),
        2,
        {"a": 171, "b": 171, "c": 170},
    ),
    # gateways (capacity 0) hold nothing
    ("gateway", roles(("a", "z", 1), ("g", "z", 0)), 1, {"a": 256}),
]


@pytest.mark.parametrize(
    ("roles_", "r", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_counts(roles_: dict[str, NodeRole], r: int, expected: dict[str, int]) -> None:
    assert assign(roles_, r).counts() == expected


def test_same_input_same_layout_and_no_moves() -> None:
    rs = roles(("a", "x", 5), ("b", "y", 3), ("c", "w", 2), ("d", "x", 7))
    first = assign(rs, 2)
    again = assign(rs, 2, first.partitions)
    assert again.partitions == first.partitions and again.moves == ()


def test_sticky_rounding_keeps_previous_counts() -> None:
    # ideal 170.67 each; previously a=170, b=171, c=171 -> keeps them (each within 1)
    ideal = waterfill({"a": 1, "b": 1, "c": 1}, {"a": 256, "b": 256, "c": 256}, 512)
    assert round_sticky(ideal, 512, {"a": 170, "b": 171, "c": 171}) == {
        "a": 170,
        "b": 171,
        "c": 171,
    }


ROUNDING = [
    # (id, ideal, previous, expected)
    # a, b held 2 and 1; c joins. Ideals 1.25, 1.25, 0.5 -> each clamped into [floor, ceil]
    # towards its previous count: a=2, b=1, c=0, sum 3: nothing left to add
    (
        "sticky fits",
        {"a": 1.25, "b": 1.25, "c": 0.5},
        {"a": 2, "b": 1},
        {"a": 2, "b": 1, "c": 0},
    ),
    # a, b held 1 each; c joins. Ideals 1.6, 1.0, 0.4 -> clamped 1, 1, 0 = 2: one to add.
    # c (held nothing) takes it although a's remainder (0.6) beats c's (0.4): c's copies
    # are sent anyway, a would be sent one more (a move between old nodes)
    (
        "joining takes the slack",
        {"a": 1.6, "b": 1.0, "c": 0.4},
        {"a": 1, "b": 1},
        {"a": 1, "b": 1, "c": 1},
    ),
    # a held 3, now ideal 1.5 -> clamped down to 2; b held 0, ideal 1.5 -> raised to its
    # floor 1: 2 + 1 = 3
    ("clamped", {"a": 1.5, "b": 1.5}, {"a": 3, "b": 0}, {"a": 2, "b": 1}),
    # a, b held 2 each, ideals 1.5 each (total 3): clamped 2 + 2 = 4, one to take away:
    # equal remainders (0.5), by name -> a
    ("take away", {"a": 1.5, "b": 1.5}, {"a": 2, "b": 2}, {"a": 1, "b": 2}),
    # nothing before: largest remainder (a, b 0.5; c 0.0), ties by name -> a
    ("first layout", {"a": 1.5, "b": 1.5, "c": 1.0}, {}, {"a": 2, "b": 1, "c": 1}),
]


@pytest.mark.parametrize(
    ("ideal", "previous", "expected"), [c[1:] for c in ROUNDING], ids=[c[0] for c in ROUNDING]
)
def test_round_sticky(
    ideal: dict[str, float], previous: dict[str, int], expected: dict[str, int]
) -> None:
    fractions = {k: Fraction(v).limit_denominator(100) for k, v in ideal.items()}
    assert round_sticky(fractions, sum(expected.values()), previous) == expected


def test_first_layout_pairs_every_node_with_every_other_zone() -> None:
    # z0 holds a and b, z1 c, z2 d (capacity 1, R=2): every partition pairs a z0 node with c
    # or d, 128 of each. A first layout must not pair a only with c and b only with d (a
    # later node joining z1 could then take a's share only by moving copies between old
    # nodes): each of the four pairings is near 256 / 4 = 64.
    rs = roles(("a", "z0", 1), ("b", "z0", 1), ("c", "z1", 1), ("d", "z2", 1))
    pairs = Counter(tuple(sorted(nodes)) for nodes in assign(rs, 2).partitions)
    assert set(pairs) == {("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")}
    assert all(40 <= k <= 88 for k in pairs.values()), pairs


def test_partition_is_the_top_byte_of_the_hash() -> None:
    assert partition_of(bytes([0xAB, 0xFF])) == 0xAB


ERRORS = [
    # (id, roles, R, message fragment)
    ("too few nodes", roles(("a", "z", 1), ("b", "z", 1)), 3, "needs 3 storage nodes, have 2"),
    ("only gateways", roles(("a", "z", 0)), 1, "needs 1 storage nodes, have 0"),
    ("R zero", roles(("a", "z", 1)), 0, "replication 0: must be 1..7"),
    ("bad node name", roles(("../a", "z", 1)), 1, "node '../a'"),
    ("negative capacity", roles(("a", "z", -5)), 1, "capacity -5 must be >= 0"),
]


@pytest.mark.parametrize(
    ("roles_", "r", "fragment"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_errors_name_the_problem(roles_: dict[str, NodeRole], r: int, fragment: str) -> None:
    with pytest.raises(LayoutError, match=fragment):
        assign(roles_, r)
