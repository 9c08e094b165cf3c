"""``/v1/netpolicies``: network policies in the store (``ClusterState.netpolicies``).

``POST`` validates a YAML or JSON document (``netpolicy.parse_policy``: ``400`` naming every
bad field, nothing stored) and stores it under its name (names are unique in the cluster;
applying the same name replaces it); ``GET`` lists them (``?namespace=NS`` filters), ``GET
/{name}`` answers one, ``DELETE /{name}`` removes one. Writes are fenced by the leader's
term. The leader's network publisher watches the table and re-pushes the devices whose
policy table changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.userapi.errors import json_response
from cloudless.lib.errors import NotFound, ValidationError
from cloudless.model.workload_codec import load_document
from cloudless.network.netpolicy import parse_policy, policy_to_dict
from cloudless.network.state import stored_policies
from cloudless.store.fence import Fence

Emit = Callable[[str, str], Awaitable[Any]]


class NetPolicyApi:
    def __init__(self, state: ClusterState, fence: Callable[[], Fence], emit: Emit) -> None:
        self.state = state
        self.fence = fence
        self.emit = emit

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/netpolicies", self.apply)
        r.add_get("/v1/netpolicies", self.list)
        r.add_get("/v1/netpolicies/{name}", self.get)
        r.add_delete("/v1/netpolicies/{name}", self.delete)

    async def apply(self, request: web.Request) -> web.Response:
        try:
            doc = load_document(await request.read())
        except ValidationError as e:
            raise ValidationError([f"network policy: {p}" for p in e.problems]) from None
        if isinstance(doc, dict) and doc.get("kind") == "NetworkPolicy":
            doc = {k: v for k, v in doc.items() if k != "kind"}
        policy = parse_policy(doc)
        existed = await self.state.netpolicies.get(policy.name) is not None
        body = policy_to_dict(policy)
        await self.state.netpolicies.put(policy.name, body, fence=self.fence())
        await self.emit("netpolicy", f"network policy {policy.name} applied")
        return json_response({"netpolicy": body}, status=200 if existed else 201)

    async def list(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace")
        policies, problems = await stored_policies(self.state.netpolicies)
        return json_response(
            {
                "netpolicies": [policy_to_dict(p) for p in policies if ns in (None, p.namespace)],
                "problems": problems,
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        rec = await self.state.netpolicies.get(name)
        if rec is None:
            raise NotFound(_missing(name))
        return json_response({"netpolicy": rec.value})

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not await self.state.netpolicies.delete(name, fence=self.fence()):
            raise NotFound(_missing(name))
        await self.emit("netpolicy", f"network policy {name} deleted")
        return json_response({"deleted": name})


def _missing(name: str) -> str:
    return f"network policy {name!r} not found: list them with `cloudless netpolicy get`"
