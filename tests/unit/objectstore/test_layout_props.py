"""Property tests for the layout decider (``cloudless.objectstore.assign``)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudless.objectstore.assign import assign
from cloudless.objectstore.layout import PARTITIONS, NodeRole, Plan
from tests.unit.objectstore.ilp_oracle import optimal_moves

CAPACITIES = [1, 2, 3, 5, 8, 100, 1000]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
# Fixed examples (derandomize), as for the oracle tests below: a bound that a random draw
# breaks is pinned as a known bug, and CI must not pass or fail by the draw.
FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)

# Each oracle call solves an integer program (~0.1-0.8 s), so these run fewer examples. The
# examples are the same on every run (derandomize): the failure this property found at random
# is pinned below as a known bug, and CI must not pass or fail by the draw.
ORACLE = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 8) -> tuple[dict[str, NodeRole], int]:
    replication = draw(st.integers(1, 3))
    zones = draw(st.integers(1, 4))
    n = draw(st.integers(replication, max_nodes))
    roles = {
        f"n{i}": NodeRole(f"z{draw(st.integers(0, zones - 1))}", draw(st.sampled_from(CAPACITIES)))
        for i in range(n)
    }
    return roles, replication


def check_valid(roles: dict[str, NodeRole], replication: int, plan: Plan) -> None:
    zones = {r.zone for r in roles.values() if r.stores}
    redundancy = min(replication, len(zones))
    assert plan.zone_redundancy == redundancy
    assert len(plan.partitions) == PARTITIONS
    for p, nodes in enumerate(plan.partitions):
        assert len(nodes) == replication, (p, nodes)
        assert len(set(nodes)) == replication, (p, nodes)
        assert all(roles[n].stores for n in nodes)
        per_zone = Counter(roles[n].zone for n in nodes)
        assert len(per_zone) >= redundancy, (p, nodes)
        assert max(per_zone.values()) <= replication - redundancy + 1, (p, nodes)


@FAST
@given(clusters())
def test_every_partition_has_r_distinct_nodes_in_distinct_zones(
    cluster: tuple[dict[str, NodeRole], int],
) -> None:
    roles, replication = cluster
    check_valid(roles, replication, assign(roles, replication))


@FAST
@given(clusters())
def test_shares_follow_capacity_within_two_copies(
    cluster: tuple[dict[str, NodeRole], int],
) -> None:
    roles, replication = cluster
    plan = assign(roles, replication)
    assert not plan.relaxed  # replication <= 3 never needs relaxing
    counts = plan.counts()
    assert sum(counts.values()) == PARTITIONS * replication
    assert abs(sum(plan.ideal.values()) - PARTITIONS * replication) < 1e-6
    for n, c in counts.items():
        assert abs(c - plan.ideal[n]) < 2, (n, c, plan.ideal[n])
        assert c <= PARTITIONS


@FAST
@given(clusters(), st.sampled_from(CAPACITIES), st.integers(0, 3))
def test_adding_a_node_moves_at_most_a_tenth_more_than_it_then_holds(
    cluster: tuple[dict[str, NodeRole], int], capacity: int, zone_pick: int
) -> None:
    roles, replication = cluster
    zones = sorted({r.zone for r in roles.values()})
    before = assign(roles, replication)
    grown = {**roles, "new": NodeRole(zones[zone_pick % len(zones)], capacity)}
    after = assign(grown, replication, before.partitions)
    check_valid(grown, replication, after)
    # The bound: adding a node moves at most 1.1x what it ends up holding (old nodes
    # may trade a few copies when exact integer shares force it; the oracle tests bound that).
    holds = after.counts()["new"]
    assert len(after.moves) <= holds + holds // 10, (len(after.moves), holds)


@ORACLE
@given(clusters(max_nodes=6), st.integers(0, 7))
def test_removing_a_node_moves_only_its_copies(
    cluster: tuple[dict[str, NodeRole], int], pick: int
) -> None:
    roles, replication = cluster
    names = sorted(roles)
    gone = names[pick % len(names)]
    rest = {n: r for n, r in roles.items() if n != gone}
    zones_before = {r.zone for r in roles.values()}
    zones_after = {r.zone for r in rest.values()}
    if len(rest) < replication or min(len(zones_before), replication) != min(
        len(zones_after), replication
    ):
        return  # a lost zone changes the spreading rule itself; covered by the oracle test
    before = assign(roles, replication)
    after = assign(rest, replication, before.partitions)
    check_valid(rest, replication, after)
    lost = before.counts()[gone]
    # Survivors only gain copies, at least the gone node's; never more than the oracle's best.
    assert len(after.moves) >= lost
    best = optimal_moves(
        rest, replication, before.partitions, after.counts(), after.zone_redundancy
    )
    assert len(after.moves) == best


@ORACLE
@given(clusters(max_nodes=6), st.data())
def test_any_change_moves_no_more_than_the_exact_optimum(
    cluster: tuple[dict[str, NodeRole], int], data: st.DataObject
) -> None:
    roles, replication = cluster
    before = assign(roles, replication)
    changed = dict(roles)
    for name in sorted(roles):
        action = data.draw(st.sampled_from(["keep", "keep", "resize", "rezone", "drop"]))
        if action == "resize":
            changed[name] = NodeRole(roles[name].zone, data.draw(st.sampled_from(CAPACITIES)))
        elif action == "rezone":
            changed[name] = NodeRole(f"z{data.draw(st.integers(0, 4))}", roles[name].capacity)
        elif action == "drop" and len(changed) > replication:
            del changed[name]
    if data.draw(st.booleans()):
        changed["extra"] = NodeRole("z9", data.draw(st.sampled_from(CAPACITIES)))
    after = assign(changed, replication, before.partitions)
    check_valid(changed, replication, after)
    best = optimal_moves(
        changed, replication, before.partitions, after.counts(), after.zone_redundancy
    )
    assert len(after.moves) == best


def test_a_second_zone_added_to_one_zone_moves_only_the_optimum() -> None:
    """Found by the property above: 5 nodes in one zone (capacity 1, R=2), then a node in a
    new zone. The optimum moves one copy of every partition to it (256); assign moves one
    more copy to an old node for no reason."""
    roles = {f"n{i}": NodeRole("z0", 1) for i in range(5)}
    before = assign(roles, 2)
    changed = {**roles, "extra": NodeRole("z9", 100)}
    after = assign(changed, 2, before.partitions)
    check_valid(changed, 2, after)
    best = optimal_moves(changed, 2, before.partitions, after.counts(), after.zone_redundancy)
    assert best == 256
    assert len(after.moves) == best


def test_a_node_joining_a_one_node_zone_moves_only_what_it_holds() -> None:
    """Found at random by ``test_adding_a_node_moves_at_most_a_tenth_more_than_it_then_holds``
    in a clean-clone run: z0 holds n0 and n1, z1 n2, z2 n3 (capacity 1, R=2); a node joins z1.
    Before, every partition pairs z0 with z1 or z2 (128 each); the new node's 102 copies can
    come 26 from n2, 26 from n3 and 51 from z0's side of (z0, z2) partitions."""
    roles = {
        "n0": NodeRole("z0", 1),
        "n1": NodeRole("z0", 1),
        "n2": NodeRole("z1", 1),
        "n3": NodeRole("z2", 1),
    }
    before = assign(roles, 2)
    grown = {**roles, "new": NodeRole("z1", 1)}
    after = assign(grown, 2, before.partitions)
    check_valid(grown, 2, after)
    holds = after.counts()["new"]
    assert len(after.moves) <= holds + holds // 10, (len(after.moves), holds)
