"""The OpenAPI description of the routes ``policy`` and ``clusterops`` add to the user API
(and of the two cluster routes the base description lacked)."""

from __future__ import annotations

from typing import Any

from cloudless.coordinator.openapi import _op, _path, _query


def paths() -> dict[str, Any]:
    return {
        "/v1/users": {
            "get": _op("List users"),
            "post": _op(
                "Create a user: {name, role, namespaces?, csr_pem, ttl_seconds?}",
                body="application/json",
                ok="201",
            ),
        },
        "/v1/users/whoami": {"get": _op("The caller's identity, role and namespaces")},
        "/v1/users/{name}": {"delete": _op("Revoke a user", params=[_path("name")])},
        "/v1/roles": {
            "get": _op("Built-in and custom roles"),
            "post": _op("Create or replace a custom role", body="application/yaml", ok="201"),
        },
        "/v1/roles/{name}": {"delete": _op("Delete a custom role", params=[_path("name")])},
        "/v1/audit": {"get": _op("Recent audit entries", params=[_query("tail", "integer")])},
        "/v1/policies": {
            "get": _op("Admission policies"),
            "post": _op(
                "Apply (or with dry_run, only check) a CEL admission policy",
                body="application/yaml",
                ok="201",
                params=[_query("dry_run", "boolean")],
            ),
        },
        "/v1/policies/{name}": {"delete": _op("Delete a policy", params=[_path("name")])},
        "/v1/ca/status": {"get": _op("Trusted roots, rotation phase, certificate expiries")},
        "/v1/cluster/coordinators": {"get": _op("Coordinators and the current leader")},
        "/v1/cluster/join": {
            "post": _op("A new coordinator joins: {token, name}", body="application/json")
        },
        "/v1/cluster/coordinators/{name}": {
            "delete": _op("Remove a coordinator (never below etcd quorum)", params=[_path("name")])
        },
    }
