"""``GET /v1/top/replicas`` and ``GET /v1/top/nodes``: live usage, like ``kubectl top``.

Served by the leader from its heartbeat-fed ``UsageBoard`` (a follower redirects there, as for
logs). ``?workload=``, ``?node=`` and ``?namespace=`` filter the replicas. Rows come in id
order; the CLI sorts (``cloudless top replicas --sort cpu``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from cloudless.coordinator.dispatcher.usage_board import UsageBoard, node_rows, replica_rows
from cloudless.coordinator.state.node_view import NodeView
from cloudless.coordinator.userapi.errors import ApiError, json_response, redirect_to_leader
from cloudless.model.replica import Replica


class LiveUsage(Protocol):
    """What the leader's dispatcher knows live: whether it serves agents, the replicas its
    watches last saw, and the usage their heartbeats carried."""

    @property
    def active(self) -> bool: ...

    usage: UsageBoard

    def known_replicas(self, namespace: str = "") -> list[Replica] | None: ...


class TopApi:
    def __init__(
        self,
        live: LiveUsage | None,
        nodes: NodeView | None,
        is_leader: Callable[[], bool],
        leader_api: Callable[[], str | None],
    ) -> None:
        self.live = live
        self.live_nodes = nodes
        self.is_leader = is_leader
        self.leader_api = leader_api

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/top/replicas", self.replicas)
        r.add_get("/v1/top/nodes", self.nodes)

    def _on_leader(self, request: web.Request) -> LiveUsage:
        if self.live is None:
            raise ApiError(503, "no_leader", "this coordinator keeps no live usage")
        if self.is_leader() and self.live.active:
            return self.live
        unavailable = "no leader serving agents yet; retry in a few seconds"
        if self.is_leader():  # leading, but not serving agents yet
            raise ApiError(503, "no_leader", unavailable)
        redirect_to_leader(request, self.leader_api(), unavailable)

    async def replicas(self, request: web.Request) -> web.Response:
        live = self._on_leader(request)
        wl, node = request.query.get("workload"), request.query.get("node")
        reps = [
            r
            for r in live.known_replicas(request.query.get("namespace", "")) or []
            if (not wl or r.workload == wl) and (not node or r.node_id == node)
        ]
        return json_response({"replicas": replica_rows(reps, live.usage)})

    async def nodes(self, request: web.Request) -> web.Response:
        live = self._on_leader(request)
        nodes = (self.live_nodes.known() if self.live_nodes is not None else None) or []
        reps = live.known_replicas() or []
        return json_response({"nodes": node_rows(nodes, reps, live.usage)})
