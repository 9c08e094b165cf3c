"""The OpenAPI 3.1 description of the user API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

_ERR = {"$ref": "#/components/responses/Error"}


def _op(
    summary: str,
    *,
    body: str | None = None,
    ok: str = "200",
    stream: bool = False,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {
                "description": "OK",
                "content": {
                    "application/x-ndjson" if stream else "application/json": {"schema": {}}
                },
            },
            "400": _ERR,
            "401": _ERR,
            "403": _ERR,
            "404": _ERR,
            "409": _ERR,
            "503": _ERR,
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {body: {"schema": {}}}}
    if params:
        op["parameters"] = params
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, typ: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": typ}}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cloudless user API", "version": "1"},
        "components": {
            "securitySchemes": {"mtls": {"type": "mutualTLS"}},
            "responses": {
                "Error": {
                    "description": "error",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "code": {"type": "string"},
                                            "message": {"type": "string"},
                                            "problems": {
                                                "type": "array",
                                                "items": {"type": "string"},
                                            },
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
        "security": [{"mtls": []}],
        "paths": {
            "/healthz": {"get": {**_op("Liveness and leadership"), "security": []}},
            "/v1/ca": {"get": {**_op("CA bundle and agent endpoints (no auth)"), "security": []}},
            "/v1/nodes": {"get": _op("List nodes")},
            "/v1/nodes/{id}": {
                "get": _op("Get a node", params=[_path("id")]),
                "delete": _op("Remove a node and revoke it", params=[_path("id")]),
            },
            "/v1/nodes/{id}/cordon": {"post": _op("Cordon", params=[_path("id")])},
            "/v1/nodes/{id}/uncordon": {"post": _op("Uncordon", params=[_path("id")])},
            "/v1/nodes/{id}/drain": {"post": _op("Drain", params=[_path("id")])},
            "/v1/workloads": {
                "get": _op("List workloads", params=[_query("namespace")]),
                "post": _op(
                    "Apply a workload spec (YAML or JSON)", body="application/yaml", ok="201"
                ),
            },
            "/v1/workloads/{name}": {
                "get": _op("Get a workload with replicas", params=[_path("name")]),
                "delete": _op("Delete a workload", params=[_path("name")]),
            },
            "/v1/workloads/{name}/scale": {
                "post": _op("Scale", body="application/json", params=[_path("name")])
            },
            "/v1/workloads/{name}/explain": {
                "get": _op("Explain placement", params=[_path("name"), _query("top", "integer")])
            },
            "/v1/explain": {"post": _op("Explain placement of a spec", body="application/yaml")},
            "/v1/replicas": {
                "get": _op("List replicas", params=[_query("workload"), _query("node")])
            },
            "/v1/replicas/{id}/logs": {
                "get": _op(
                    "Replica logs",
                    params=[_path("id"), _query("follow", "boolean"), _query("tail", "integer")],
                )
            },
            "/v1/tokens": {
                "get": _op("List tokens"),
                "post": _op("Create a token", body="application/json", ok="201"),
            },
            "/v1/tokens/{id}": {"delete": _op("Revoke a token", params=[_path("id")])},
            "/v1/events": {
                "get": _op(
                    "Events (NDJSON), optionally followed",
                    stream=True,
                    params=[_query("follow", "boolean"), _query("tail", "integer")],
                )
            },
            **_access_paths(),
        },
    }


def _access_paths() -> dict[str, Any]:
    from cloudless.policy.openapi_paths import paths

    return paths()
