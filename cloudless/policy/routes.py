"""Which verb on which resource each user-API route is (pure table).

``classify(method, pattern)`` maps an aiohttp route (its canonical pattern, e.g.
``/v1/workloads/{name}``) to a ``RouteAccess``: the verb, the resource, and where the
namespace of a namespaced resource comes from (the request body, the query, or the stored
workload/replica the route names). A route missing from the table is ``UNMAPPED``: only a
role granting every verb on every resource (admin) may call it, so a new route is closed
until someone places it here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cloudless.policy.rbac import ALL


class NsFrom(enum.Enum):
    NONE = "none"  # cluster-scoped resource
    BODY = "body"  # a workload spec in the body (its ``namespace``, default ``default``)
    QUERY = "query"  # ?namespace=NS, or ?workload=NAME's namespace, else every namespace
    WORKLOAD = "workload"  # the stored workload named by {name}
    REPLICA = "replica"  # the workload of the replica named by {id}


@dataclass(frozen=True, slots=True)
class RouteAccess:
    verb: str
    resource: str
    ns_from: NsFrom = NsFrom.NONE
    write: bool = False


def _r(verb: str, resource: str, ns: NsFrom = NsFrom.NONE) -> RouteAccess:
    return RouteAccess(verb, resource, ns, write=verb not in ("get", "list"))


PUBLIC = frozenset(
    {"/healthz", "/v1/ca", "/v1/ca/endorsements", "/openapi.json", "/v1/cluster/join"}
)
SELF = frozenset({"/v1/users/whoami", "/v1/users/renew"})  # any authenticated caller, about itself

ROUTES: dict[tuple[str, str], RouteAccess] = {
    ("GET", "/v1/nodes"): _r("list", "nodes"),
    ("GET", "/v1/nodes/{id}"): _r("get", "nodes"),
    ("POST", "/v1/nodes/{id}/cordon"): _r("update", "nodes"),
    ("POST", "/v1/nodes/{id}/uncordon"): _r("update", "nodes"),
    ("POST", "/v1/nodes/{id}/drain"): _r("update", "nodes"),
    ("DELETE", "/v1/nodes/{id}"): _r("delete", "nodes"),
    # create or update: decided by whether the workload exists (see ``access``)
    ("POST", "/v1/workloads"): _r("create", "workloads", NsFrom.BODY),
    ("GET", "/v1/workloads"): _r("list", "workloads", NsFrom.QUERY),
    ("GET", "/v1/workloads/{name}"): _r("get", "workloads", NsFrom.WORKLOAD),
    ("POST", "/v1/workloads/{name}/scale"): _r("update", "workloads", NsFrom.WORKLOAD),
    ("DELETE", "/v1/workloads/{name}"): _r("delete", "workloads", NsFrom.WORKLOAD),
    ("GET", "/v1/workloads/{name}/explain"): _r("get", "workloads", NsFrom.WORKLOAD),
    ("POST", "/v1/explain"): RouteAccess("get", "workloads", NsFrom.BODY, write=False),
    ("GET", "/v1/replicas"): _r("list", "replicas", NsFrom.QUERY),
    ("GET", "/v1/replicas/{id}/logs"): _r("get", "logs", NsFrom.REPLICA),
    ("POST", "/v1/tokens"): _r("create", "tokens"),
    ("GET", "/v1/tokens"): _r("list", "tokens"),
    ("DELETE", "/v1/tokens/{id}"): _r("delete", "tokens"),
    ("GET", "/v1/events"): _r("list", "events"),
    ("GET", "/v1/cluster/coordinators"): _r("list", "coordinators"),
    ("DELETE", "/v1/cluster/coordinators/{name}"): _r("delete", "coordinators"),
    ("GET", "/v1/ca/status"): _r("get", "ca"),
    ("POST", "/v1/ca/rotate"): _r("create", "ca"),
    ("POST", "/v1/users"): _r("create", "users"),
    ("GET", "/v1/users"): _r("list", "users"),
    ("DELETE", "/v1/users/{name}"): _r("delete", "users"),
    ("POST", "/v1/roles"): _r("create", "roles"),
    ("GET", "/v1/roles"): _r("list", "roles"),
    ("DELETE", "/v1/roles/{name}"): _r("delete", "roles"),
    ("GET", "/v1/audit"): _r("list", "audit"),
    ("POST", "/v1/policies"): _r("create", "policies"),
    ("GET", "/v1/policies"): _r("list", "policies"),
    ("DELETE", "/v1/policies/{name}"): _r("delete", "policies"),
    ("GET", "/metrics"): _r("get", "metrics"),
    ("GET", "/v1/sd/prometheus"): _r("list", "metrics"),
    # a login link for the read-only console: a POST that writes no cluster state
    ("POST", "/v1/ui/login"): RouteAccess("get", "console", NsFrom.NONE, write=False),
    ("GET", "/v1/services"): _r("list", "services"),
    ("GET", "/v1/services/{name}"): _r("get", "services", NsFrom.QUERY),
    ("GET", "/v1/network"): _r("get", "services"),
    ("POST", "/v1/netpolicies"): _r("create", "netpolicies"),
    ("GET", "/v1/netpolicies"): _r("list", "netpolicies"),
    ("GET", "/v1/netpolicies/{name}"): _r("get", "netpolicies"),
    ("DELETE", "/v1/netpolicies/{name}"): _r("delete", "netpolicies"),
    ("GET", "/v1/volumes"): _r("list", "volumes", NsFrom.QUERY),
    ("POST", "/v1/secrets"): _r("create", "secrets"),
    ("GET", "/v1/secrets"): _r("list", "secrets"),
    ("DELETE", "/v1/secrets/{name}"): _r("delete", "secrets"),
    ("POST", "/v1/secrets/rotate"): _r("update", "secrets"),
    ("POST", "/v1/configs"): _r("create", "configs"),
    ("GET", "/v1/configs"): _r("list", "configs"),
    ("GET", "/v1/configs/{name}"): _r("get", "configs"),
    ("DELETE", "/v1/configs/{name}"): _r("delete", "configs"),
    ("GET", "/v1/workloads/{name}/rollout"): _r("get", "workloads", NsFrom.WORKLOAD),
    ("POST", "/v1/workloads/{name}/undo"): _r("update", "workloads", NsFrom.WORKLOAD),
    ("GET", "/v1/top/replicas"): _r("list", "replicas", NsFrom.QUERY),
    ("GET", "/v1/top/nodes"): _r("list", "nodes"),
    ("POST", "/v1/s3/keys"): _r("create", "s3keys"),
    ("GET", "/v1/s3/keys"): _r("list", "s3keys"),
    ("DELETE", "/v1/s3/keys/{id}"): _r("delete", "s3keys"),
    ("POST", "/v1/s3/buckets"): _r("create", "s3buckets"),
    ("GET", "/v1/s3/buckets"): _r("list", "s3buckets"),
    ("POST", "/v1/s3/buckets/{name}/allow"): _r("update", "s3buckets"),
    ("GET", "/v1/s3/layout"): _r("get", "s3layout"),
    ("POST", "/v1/s3/layout/stage"): _r("update", "s3layout"),
    ("GET", "/v1/s3/layout/preview"): _r("get", "s3layout"),
    ("POST", "/v1/s3/layout/apply"): _r("update", "s3layout"),
    ("GET", "/v1/s3/status"): _r("get", "s3layout"),
}


def classify(method: str, pattern: str) -> RouteAccess:
    method = "GET" if method == "HEAD" else method
    hit = ROUTES.get((method, pattern))
    if hit is not None:
        return hit
    write = method not in ("GET", "HEAD", "OPTIONS")
    return RouteAccess("create" if write else "get", ALL, NsFrom.NONE, write)


UNMAPPED_HINT = "this route is not in cloudless.policy.routes.ROUTES, so only admin may call it"
