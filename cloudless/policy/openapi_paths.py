"""The OpenAPI description of the routes ``policy`` and ``clusterops`` add to the user API.

Request bodies of these routes are checked by their handlers (users, roles and policies are
YAML or JSON documents validated by ``cloudless.policy``); their schemas are not published
yet, only the routes, parameters and answers' content types."""

from __future__ import annotations

from cloudless.coordinator.userapi.openapi import JSON, Route


def routes() -> tuple[Route, ...]:
    def r(
        method: str,
        path: str,
        summary: str,
        *,
        status: int = 200,
        query: tuple[tuple[str, str, str], ...] = (),
    ) -> Route:
        return Route(method, path, summary, JSON, status=status, query=query)

    tail = (("tail", "integer", "how many of the newest to show"),)
    dry = (("dry_run", "boolean", "only report what would be denied"),)
    return (
        r("get", "/v1/users", "List users"),
        r(
            "post",
            "/v1/users",
            "Create a user: {name, role, namespaces?, csr_pem, ttl_seconds?}",
            status=201,
        ),
        r("get", "/v1/users/whoami", "The caller's identity, role and namespaces"),
        r("delete", "/v1/users/{name}", "Revoke a user"),
        r("get", "/v1/roles", "Built-in and custom roles"),
        r("post", "/v1/roles", "Create or replace a custom role (YAML or JSON)", status=201),
        r("delete", "/v1/roles/{name}", "Delete a custom role"),
        r("get", "/v1/audit", "Recent audit entries", query=tail),
        r("get", "/v1/policies", "Admission policies"),
        r(
            "post",
            "/v1/policies",
            "Apply (or with dry_run, only check) a CEL admission policy (YAML or JSON)",
            status=201,
            query=dry,
        ),
        r("delete", "/v1/policies/{name}", "Delete a policy"),
        r("get", "/v1/ca/status", "Trusted roots, rotation phase, certificate expiries"),
        Route(
            "get",
            "/v1/ca/endorsements",
            "The rotating-to root certified by the current one (PEM; empty when none)",
            "application/x-pem-file",
            public=True,
        ),
        r(
            "post",
            "/v1/ca/rotate",
            "Start a root rotation: {overlap_s?} (seconds the old root stays trusted after "
            "every certificate was re-issued)",
            status=201,
        ),
        r(
            "post",
            "/v1/ca/rotate/abort",
            "Abort the current root rotation while the old root is still trusted (trust or "
            "issue phase): the old root issues again and the new one is dropped",
        ),
        r(
            "post",
            "/v1/users/renew",
            "Renew the caller's own user certificate: {csr_pem}; answers {cert_pem, ca_bundle_pem}",
        ),
        r(
            "delete",
            "/v1/cluster/coordinators/{name}",
            "Remove a coordinator (never below etcd quorum)",
        ),
    )
