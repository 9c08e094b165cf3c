"""The layout history in the store: stage, preview, apply with compare-and-swap, trackers."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.errors import Conflict
from cloudless.objectstore.layout import LayoutError, NodeRole
from cloudless.objectstore.layout_store import LayoutStore
from tests.contract.store.conftest import Harness

GB = 10**9


async def fresh(harness: Harness) -> LayoutStore:
    ls = LayoutStore(harness.store)
    await harness.store.delete("/cloudless/objectstore/", prefix=True)
    return ls


async def test_first_layout_then_add_a_node_moves_only_to_it(harness: Harness) -> None:
    ls = await fresh(harness)
    await ls.stage_replication(3)
    for i, zone in enumerate(["home", "office", "vps"]):
        await ls.stage(f"n{i}", NodeRole(zone, 100 * GB))
    hist, plan = await ls.apply(0)
    assert hist.version() == 1 and len(hist.versions) == 1
    # 3 zones, R=3: every node holds every partition (256 each), nothing moved before v1.
    assert plan.counts() == {"n0": 256, "n1": 256, "n2": 256}
    assert hist.read_version() is hist.current  # a first layout has nothing to sync

    await ls.stage("n3", NodeRole("home", 100 * GB))
    preview = await ls.preview()
    # home splits 256 copies over n0 and n3 (equal capacity): n3 takes 128, all of them moves.
    assert preview.counts()["n3"] == 128 and len(preview.moves) == 128
    hist, plan = await ls.apply(1)
    assert plan.moves == preview.moves
    assert [v.version for v in hist.versions] == [1, 2]
    assert hist.read_version() is not None and hist.read_version().version == 1  # n3 not synced
    assert len(hist.write_versions()) == 2

    await ls.stage("n4", NodeRole("vps", GB))
    # Every node of v2 acknowledges it, moved or not (it must at least know v2 exists).
    with pytest.raises(Conflict, match="still syncing on n0, n1, n2, n3"):
        await ls.apply(2)
    for n in ["n0", "n1", "n2", "n3"]:
        await ls.observe(n, 2, 1)
        hist = await ls.ack_synced(n, 2)
    assert [v.version for v in hist.versions] == [1, 2]  # until every node reads from v2
    assert hist.read_version() is hist.current
    for n in ["n0", "n1", "n2", "n3"]:
        hist = await ls.observe(n, 2, 2)
    assert [v.version for v in hist.versions] == [2]
    assert hist.read_version() is hist.current


async def test_an_operators_removal_is_remembered_the_policys_is_not(harness: Harness) -> None:
    ls = await fresh(harness)
    await ls.stage_replication(1)
    await ls.stage("a", NodeRole("z", GB))
    await ls.stage("b", NodeRole("z", GB))
    await ls.apply(0)
    await ls.stage("b", None)
    hist, _ = await ls.apply(1)
    assert hist.removed == {"b"} and (await ls.show()).removed == {"b"}  # stored, read back
    await ls.observe("a", 2, 1)
    await ls.ack_synced("a", 2)
    await ls.observe("a", 2, 2)
    hist, _ = await ls.apply_change({"b": NodeRole("z", GB)}, None, 2)
    assert hist.removed == frozenset()  # a role for it lifts the removal
    for n in ("a", "b"):
        await ls.observe(n, 3, 2)
        await ls.ack_synced(n, 3)
    for n in ("a", "b"):
        await ls.observe(n, 3, 3)
    hist, _ = await ls.apply_change({"b": None}, None, 3)  # the policy replacing it
    assert hist.removed == frozenset()


async def test_a_stale_apply_is_refused_and_says_why(harness: Harness) -> None:
    ls = await fresh(harness)
    await ls.stage_replication(1)
    await ls.stage("a", NodeRole("z", GB))
    await ls.apply(0)
    await ls.stage("b", NodeRole("z", GB))
    with pytest.raises(Conflict, match="at version 1, not 0"):
        await ls.apply(0)


async def test_concurrent_stagers_both_land(harness: Harness) -> None:
    ls = await fresh(harness)
    await asyncio.gather(*(ls.stage(f"n{i}", NodeRole("z", GB)) for i in range(6)))
    hist = await ls.show()
    assert sorted(hist.staged_roles) == [f"n{i}" for i in range(6)]


BAD = [
    # (what, action, message fragment)
    ("nothing staged", lambda ls: ls.apply(0), "nothing staged"),
    ("negative capacity", lambda ls: ls.stage("a", NodeRole("z", -1)), "must be >= 0"),
    ("bad zone name", lambda ls: ls.stage("a", NodeRole("z/1", 1)), "zone 'z/1'"),
    ("remove unknown node", lambda ls: ls.stage("ghost", None), "not in the layout"),
    ("replication 9", lambda ls: ls.stage_replication(9), "must be 1..7"),
]


@pytest.mark.parametrize(("what", "action", "fragment"), BAD, ids=[b[0] for b in BAD])
async def test_bad_layout_changes_name_the_problem(
    harness: Harness, what: str, action: object, fragment: str
) -> None:
    ls = await fresh(harness)
    with pytest.raises(LayoutError, match=fragment):
        await action(ls)  # type: ignore[operator]


async def test_too_few_nodes_for_the_replication(harness: Harness) -> None:
    ls = await fresh(harness)
    await ls.stage_replication(3)
    await ls.stage("a", NodeRole("z", GB))
    await ls.stage("b", NodeRole("z", GB))
    with pytest.raises(LayoutError, match="replication 3 needs 3 storage nodes, have 2"):
        await ls.apply(0)
    assert (await ls.show()).version() == 0
