"""``NodeView``: one nodes watch, shared. Listeners hear every change after the view holds it,
in the store's order; ``known()`` is ``None`` while the view is not followed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.node_view import NodeView
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.store.memory import MemoryStore


class Heard:
    def __init__(self, view: NodeView) -> None:
        self.view = view
        self.seen: list[tuple[str, str, bool]] = []  # (what, node, the view already had it)

    def nodes_listed(self, nodes: list[Node]) -> None:
        self.seen += [("listed", n.id, n.id in self.view.nodes) for n in nodes]

    def node_changed(self, node_id: str, node: Node) -> None:
        self.seen.append(("changed", node_id, self.view.nodes.get(node_id) is node))

    def node_deleted(self, node_id: str) -> None:
        self.seen.append(("deleted", node_id, node_id not in self.view.nodes))


async def settle(until: Callable[[], bool]) -> None:
    """Let the watch deliver (a memory store's watch needs a few turns of the loop)."""
    for _ in range(1000):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the watch did not deliver")


async def test_listeners_hear_changes_after_the_view_holds_them() -> None:
    state = ClusterState(MemoryStore(FakeClock()))
    await state.nodes.put("a", Node.make("a", state=NodeState.READY))
    view = NodeView(state)
    heard = Heard(view)
    view.listen(heard)
    assert view.known() is None  # not followed yet
    listed = await view.load()
    assert [n.id for n in listed] == ["a"] and heard.seen == []  # the caller starts from these
    task = asyncio.create_task(view.follow())
    try:
        await state.nodes.put("b", Node.make("b", state=NodeState.READY))
        a = (await state.nodes.get("a")).value  # type: ignore[union-attr]
        await state.nodes.put("a", replace(a, state=NodeState.CORDONED))
        await state.nodes.delete("b")
        await settle(lambda: len(heard.seen) == 3)
        assert heard.seen == [
            ("changed", "b", True),
            ("changed", "a", True),
            ("deleted", "b", True),
        ]
        known = view.known()
        assert known is not None and [(n.id, n.state) for n in known] == [("a", NodeState.CORDONED)]
        rec = await state.nodes.get("a")
        assert rec is not None and view.revs["a"] == rec.mod_revision
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    view.stop()
    assert view.known() is None


async def test_a_second_follow_lists_again_and_tells_the_listeners() -> None:
    state = ClusterState(MemoryStore(FakeClock()))
    await state.nodes.put("a", Node.make("a", state=NodeState.READY))
    view = NodeView(state)
    heard = Heard(view)
    view.listen(heard)
    await view.load()
    first = asyncio.create_task(view.follow())
    await asyncio.sleep(0)
    first.cancel()  # the watch failed
    await asyncio.gather(first, return_exceptions=True)
    await state.nodes.put("c", Node.make("c", state=NodeState.READY))  # missed by the watch
    again = asyncio.create_task(view.follow())
    try:
        await settle(lambda: len(heard.seen) == 2)
        assert heard.seen == [("listed", "a", True), ("listed", "c", True)]
    finally:
        again.cancel()
        await asyncio.gather(again, return_exceptions=True)
