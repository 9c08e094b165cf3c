"""The OpenAPI 3.1 description of the user API, served at ``/openapi.json``.

Request and response schemas are generated from the pydantic models in ``api_models`` (the
request models are the ones the handlers validate with); ``ROUTES`` lists every route the
API serves, which ``tests/unit/coordinator/test_openapi.py`` checks against the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cloudless.coordinator.userapi import models as m

_REF = "#/components/schemas/{model}"
YAML = "application/yaml"
JSON = "application/json"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    ok: type[BaseModel] | str  # a model, or a media type for streams
    body: type[BaseModel] | None = None
    body_type: str = JSON
    status: int = 200
    query: tuple[tuple[str, str, str], ...] = ()  # (name, type, description)
    public: bool = False  # no client certificate needed
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404, 405, 413, 503))


_TOP = (("top", "integer", "how many best nodes to show (0-100000)"),)
_TAIL = ("tail", "integer", "how many of the latest to send first (0-100000)")
_FOLLOW = ("follow", "boolean", "keep the stream open and send new ones (1, true, yes)")

ROUTES: tuple[Route, ...] = (
    Route("get", "/healthz", "Liveness and leadership", m.Health, public=True),
    Route("get", "/v1/ca", "CA bundle and agent endpoints", m.CaInfo, public=True),
    Route("get", "/openapi.json", "This document", "application/json", public=True),
    Route("get", "/v1/nodes", "List nodes", m.NodeList),
    Route("get", "/v1/nodes/{id}", "Get a node with its replicas", m.NodeDetail),
    Route("delete", "/v1/nodes/{id}", "Remove a node and revoke its certificate", m.NodeRemoved),
    Route("post", "/v1/nodes/{id}/cordon", "Cordon: no new replicas", m.NodeView),
    Route("post", "/v1/nodes/{id}/uncordon", "Uncordon", m.NodeView),
    Route(
        "post",
        "/v1/nodes/{id}/drain",
        "Drain: move its replicas away (make-before-break, optional deadline)",
        m.NodeView,
        body=m.DrainRequest,
    ),
    Route("get", "/v1/volumes", "Persistent volumes: node, mount, size, usage, quota mode", JSON),
    Route("get", "/v1/secrets", "Secrets: names, sizes, generations (never values)", JSON),
    Route("post", "/v1/secrets", "Create or update a secret", JSON, status=201),
    Route("delete", "/v1/secrets/{name}", "Delete a secret", JSON),
    Route("post", "/v1/secrets/rotate", "Re-seal every secret under a new key", JSON),
    Route("get", "/v1/configs", "Configs: names, sizes, versions", JSON),
    Route("post", "/v1/configs", "Create or update a config", JSON, status=201),
    Route("get", "/v1/configs/{name}", "A config with its value (base64)", JSON),
    Route("delete", "/v1/configs/{name}", "Delete a config", JSON),
    Route("get", "/v1/workloads/{name}/rollout", "Roll-out status and history", JSON),
    Route("post", "/v1/workloads/{name}/undo", "Roll back to the previous spec", JSON),
    Route(
        "get",
        "/v1/top/replicas",
        "Live usage of running replicas (CPU, memory, disk, network)",
        JSON,
        query=(
            ("workload", "string", "only this workload's replicas"),
            ("node", "string", "only replicas on this node"),
            ("namespace", "string", "only replicas of workloads in this namespace"),
        ),
    ),
    Route("get", "/v1/top/nodes", "Live usage of nodes and the replicas they run", JSON),
    Route(
        "get",
        "/v1/services",
        "List services: VIP, ports, endpoints ready/total",
        "application/json",
    ),
    Route("get", "/v1/services/{name}", "A service: VIP, names, endpoints, why not ready", JSON),
    Route("get", "/v1/network", "Address plan, lighthouse, each node's slot", JSON),
    Route(
        "get",
        "/v1/netpolicies",
        "Network policies (allow/deny ingress by namespace and labels)",
        JSON,
        query=(("namespace", "string", "only the policies of this namespace"),),
    ),
    Route(
        "post",
        "/v1/netpolicies",
        "Apply a network policy (YAML or JSON); 201 when created, 200 when replaced",
        JSON,
        status=201,
    ),
    Route("get", "/v1/netpolicies/{name}", "A network policy", JSON),
    Route(
        "post",
        "/v1/s3/keys",
        "Create an object-store access key (secret shown once)",
        JSON,
        status=201,
    ),
    Route("get", "/v1/s3/keys", "Object-store access keys (never secrets)", JSON),
    Route("delete", "/v1/s3/keys/{id}", "Delete an access key", JSON),
    Route("post", "/v1/s3/buckets", "Create a bucket owned by an access key", JSON, status=201),
    Route("get", "/v1/s3/buckets", "Buckets and which keys may use them", JSON),
    Route("post", "/v1/s3/buckets/{name}/allow", "Grant a key read, write or owner", JSON),
    Route("get", "/v1/s3/layout", "The object-store layout and staged changes", JSON),
    Route("post", "/v1/s3/layout/stage", "Stage a storage node's role or removal", JSON),
    Route("get", "/v1/s3/layout/preview", "What applying the staged changes moves", JSON),
    Route("post", "/v1/s3/layout/apply", "Apply the staged changes as the next version", JSON),
    Route("get", "/v1/s3/status", "Registered object-store nodes and the layout", JSON),
    Route("delete", "/v1/netpolicies/{name}", "Delete a network policy", JSON),
    Route("get", "/v1/workloads", "List workloads", m.WorkloadList),
    Route(
        "post",
        "/v1/workloads",
        "Apply a workload spec (YAML or JSON); 201 when created, 200 when changed",
        m.Applied,
        body=m.WorkloadSpecDoc,
        body_type=YAML,
        status=201,
    ),
    Route("get", "/v1/workloads/{name}", "Get a workload with its replicas", m.WorkloadView),
    Route("delete", "/v1/workloads/{name}", "Delete a workload", m.WorkloadDeleted),
    Route(
        "post",
        "/v1/workloads/{name}/scale",
        "Scale a workload",
        m.WorkloadView,
        body=m.ScaleRequest,
    ),
    Route("get", "/v1/workloads/{name}/explain", "Explain placement", m.Explanation, query=_TOP),
    Route(
        "post",
        "/v1/explain",
        "Explain placement of a spec without applying it",
        m.Explanation,
        body=m.WorkloadSpecDoc,
        body_type=YAML,
        query=_TOP,
    ),
    Route(
        "get",
        "/v1/replicas",
        "List replicas",
        m.ReplicaList,
        query=(("workload", "string", "only this workload's"), ("node", "string", "only on")),
    ),
    Route(
        "get",
        "/v1/replicas/{id}/logs",
        "A replica's logs (text), optionally followed",
        "text/plain",
        query=(_FOLLOW, _TAIL),
    ),
    Route(
        "post",
        "/v1/tokens",
        "Create a join token",
        m.TokenCreated,
        body=m.TokenRequest,
        status=201,
    ),
    Route("get", "/v1/tokens", "List join tokens (never their secrets)", m.TokenList),
    Route("delete", "/v1/tokens/{id}", "Revoke a join token", m.TokenRevoked),
    Route(
        "get",
        "/v1/events",
        "Events (NDJSON, one Event per line, each with its revision), paged, filtered, "
        "optionally followed; the Cloudless-Continue header is the next page's continue",
        "application/x-ndjson",
        query=(
            _FOLLOW,
            _TAIL,
            ("since", "integer", "events after this store revision"),
            ("continue", "string", "resume after this position (REVISION:ID)"),
            ("limit", "integer", "at most this many (up to 1000)"),
            ("kind", "string", "only this kind"),
            ("object", "string", "only about node/ID, workload/NAME, replica/ID or a name"),
        ),
    ),
    Route(
        "post",
        "/v1/cluster/join",
        "A coordinator joins with a coordinator-join token",
        m.Joined,
        body=m.JoinRequest,
        public=True,
    ),
    Route("get", "/v1/cluster/coordinators", "List coordinators", m.CoordinatorList),
    Route(
        "get",
        "/metrics",
        "This coordinator's Prometheus metrics (text format, or OpenMetrics when accepted)",
        "text/plain",
    ),
    Route(
        "get",
        "/v1/sd/prometheus",
        "Prometheus HTTP service discovery: every coordinator and agent metrics target",
        m.ScrapeTargets,
    ),
    Route(
        "post",
        "/v1/ui/login",
        "A one-time link (60 s) that logs a browser into the web console",
        m.ConsoleLogin,
    ),
)

_EXTRA_MODELS: tuple[type[BaseModel], ...] = (m.ErrorBody, m.Event)


def _models() -> list[type[BaseModel]]:
    seen: dict[str, type[BaseModel]] = {}
    for r in ROUTES:
        for model in (r.ok, r.body):
            if isinstance(model, type):
                seen[model.__name__] = model
    for model in _EXTRA_MODELS:
        seen[model.__name__] = model
    return list(seen.values())


def _operation(r: Route) -> dict[str, Any]:
    ok: dict[str, Any]
    if isinstance(r.ok, str):
        schema: dict[str, Any] = {"type": "string"} if r.ok == "text/plain" else {}
        if r.ok == "application/x-ndjson":
            schema = {"$ref": _REF.format(model="Event")}
        ok = {"description": "OK", "content": {r.ok: {"schema": schema}}}
    else:
        ok = {
            "description": "OK",
            "content": {JSON: {"schema": {"$ref": _REF.format(model=r.ok.__name__)}}},
        }
    responses: dict[str, Any] = {str(r.status): ok}
    for code in r.errors:
        responses[str(code)] = {"$ref": "#/components/responses/Error"}
    op: dict[str, Any] = {
        "summary": r.summary,
        "operationId": f"{r.method}_{r.path.strip('/').replace('/', '_').replace('.', '_')}",
        "responses": responses,
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_params(r.path)
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": desc,
            "schema": {"type": typ},
        }
        for name, typ, desc in r.query
    ]
    if params:
        op["parameters"] = params
    if r.body is not None:
        ref = {"$ref": _REF.format(model=r.body.__name__)}
        content = {r.body_type: {"schema": ref}}
        if r.body_type == YAML:
            content[JSON] = {"schema": ref}
        op["requestBody"] = {"required": r.body is not m.TokenRequest, "content": content}
    if r.public:
        op["security"] = []
    return op


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


@cache
def spec() -> dict[str, Any]:
    _, defs = models_json_schema([(model, "validation") for model in _models()], ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    from cloudless.policy.openapi_paths import routes as access_routes

    for r in (*ROUTES, *access_routes()):
        paths.setdefault(r.path, {})[r.method] = _operation(r)
    error_ref = {"$ref": _REF.format(model="ErrorBody")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cloudless user API",
            "version": "1",
            "description": (
                "Every error is the ErrorBody object; problems name each field as "
                "'<path>: <reason>' (spec.* for a workload spec, body.* for a JSON body, "
                "query.* and path.* for URL parts)."
            ),
        },
        "components": {
            "securitySchemes": {"mtls": {"type": "mutualTLS"}},
            "schemas": defs.get("$defs", {}),
            "responses": {
                "Error": {"description": "error", "content": {JSON: {"schema": error_ref}}}
            },
        },
        "security": [{"mtls": []}],
        "paths": paths,
    }
