"""``NodeView``: the nodes table as one watch last saw it, shared by every reader on the leader.

The leader lists the table once (``load``) and follows one watch from the next revision
(``follow``); a watch that fails is followed again after a fresh listing. Listeners
(liveness, the dispatcher) are told of every listing, change and deletion in the order the
store made them, after the view itself has taken the change, so a listener that reads the
view sees the record it is told about. Readers that only need "the nodes, more or less
now" (whether a spec fits anywhere) take ``known()`` instead of a store listing: at
thousands of nodes a listing costs a range read and a decode per node.
"""

from __future__ import annotations

from typing import Protocol

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.model.node import Node
from cloudless.store.table import TableListing
from cloudless.store.types import EventType


class NodeListener(Protocol):
    def nodes_listed(self, nodes: list[Node]) -> None:
        """The view re-listed the table (after a failed watch): ``nodes`` is all of it."""

    def node_changed(self, node_id: str, node: Node) -> None:
        """``node_id``'s record was written (created or changed); ``node`` is the new value."""

    def node_deleted(self, node_id: str) -> None:
        """``node_id``'s record was deleted."""


class NodeView:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        #: Every node as last seen, and the mod revision it was seen at (batched writes
        #: compare against it).
        self.nodes: dict[str, Node] = {}
        self.revs: dict[str, int] = {}
        self._listeners: list[NodeListener] = []
        self._from: int | None = None  # where ``follow`` starts (None: list first)
        self._live = False

    def listen(self, listener: NodeListener) -> None:
        self._listeners.append(listener)

    def known(self) -> list[Node] | None:
        """Every node as the watch last saw it; ``None`` while the view is not followed (this
        coordinator does not lead). Behind the store by the watch's delay."""
        return list(self.nodes.values()) if self._live else None

    async def load(self) -> list[Node]:
        """List the table (``follow`` then starts after this listing); the nodes listed.
        Listeners are not told: the caller starts them from the returned nodes."""
        listing = await self.state.nodes.list()
        self._take(listing)
        self._from = listing.revision + 1
        self._live = True
        return [r.value for r in listing.records]

    def stop(self) -> None:
        """No longer followed: ``known()`` is ``None`` until the next ``load``."""
        self._live = False
        self._from = None

    def _take(self, listing: TableListing[Node]) -> None:
        self.nodes = {r.name: r.value for r in listing.records}
        self.revs = {r.name: r.mod_revision for r in listing.records}

    async def follow(self) -> None:
        """Follow the table from ``load``'s listing; when called again after an error, list
        again first (and tell the listeners)."""
        start, self._from = self._from, None
        if start is None:
            listing = await self.state.nodes.list()
            self._take(listing)
            nodes = [r.value for r in listing.records]
            for listener in self._listeners:
                listener.nodes_listed(nodes)
            start = listing.revision + 1
        async for ev in self.state.nodes.watch(start_revision=start):
            if ev.type is EventType.DELETE:
                self.nodes.pop(ev.name, None)
                self.revs.pop(ev.name, None)
                for listener in self._listeners:
                    listener.node_deleted(ev.name)
            elif ev.record is not None:
                self.nodes[ev.name] = ev.record.value
                self.revs[ev.name] = ev.record.mod_revision
                for listener in self._listeners:
                    listener.node_changed(ev.name, ev.record.value)
