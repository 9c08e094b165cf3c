"""Users and roles: who may do what to which resource in which namespace (pure).

A **role** is a list of rules; a rule grants ``verbs`` on ``resources``, optionally only in
``namespaces``. A **user** holds one role, optionally bound to namespaces (the developer's
"its namespaces"). ``decide(user, role, request)`` is a plain function: no store, no clock.

Rules of the decision:

1. a verb or resource outside ``VERBS``/``RESOURCES`` never reaches here: ``parse_role``
   refuses it (so a typo cannot silently grant nothing, or everything);
2. a request is allowed iff one rule of the role names its verb (or ``*``) and its resource
   (or ``*``) and, for a namespaced resource, its namespace is inside both the rule's
   namespaces (if the rule has any) and the user's binding (if the user has one);
3. a request on a namespaced resource across every namespace (``namespace="*"``, e.g. list
   all workloads) is allowed only by a rule and a binding with no namespace limit;
4. every refusal names the user, role, verb, resource and namespace, and says what would
   allow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import is_valid_id

VERBS = ("get", "list", "create", "update", "delete")
READ_VERBS = ("get", "list")
RESOURCES = (
    "nodes",
    "workloads",
    "replicas",
    "logs",
    "events",
    "tokens",
    "coordinators",
    "ca",
    "users",
    "roles",
    "policies",
    "audit",
    "metrics",  # /metrics and the Prometheus SD document
    "console",  # a web console login (the console shows the whole cluster, read-only)
    "services",  # service VIPs and endpoints (cloudless/network)
    "netpolicies",  # network policies: who may connect to whom (cloudless/network)
    "volumes",  # persistent volumes of replicas (listing; deleted with their workload)
    "secrets",  # cluster secrets: names and metadata; values are never answered
    "configs",  # config objects (non-secret files for workloads): values are readable
    "s3keys",  # object-store access keys (a secret is answered once, when created)
    "s3buckets",  # object-store buckets and which keys may use them
    "s3layout",  # which storage nodes hold which partitions; registered store nodes
)
NAMESPACED = frozenset({"workloads", "replicas", "logs"})
ALL = "*"
ALL_NAMESPACES = "*"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: frozenset[str]
    resources: frozenset[str]
    namespaces: frozenset[str] | None = None  # None: every namespace

    def grants(self, verb: str, resource: str) -> bool:
        return (ALL in self.verbs or verb in self.verbs) and (
            ALL in self.resources or resource in self.resources
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verbs": sorted(self.verbs), "resources": sorted(self.resources)}
        if self.namespaces is not None:
            out["namespaces"] = sorted(self.namespaces)
        return out


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    rules: tuple[Rule, ...]
    description: str = ""
    builtin: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "builtin": self.builtin,
            "rules": [r.to_dict() for r in self.rules],
        }


@dataclass(frozen=True, slots=True)
class User:
    """A user's binding: one role, optionally limited to ``namespaces`` (None: all)."""

    name: str
    role: str
    namespaces: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AccessRequest:
    verb: str
    resource: str
    namespace: str = ""  # "" for cluster-scoped resources, "*" for every namespace
    name: str = ""  # the object acted on, for the audit log and messages

    def describe(self) -> str:
        what = f"{self.resource}/{self.name}" if self.name else self.resource
        if self.resource in NAMESPACED:
            where = "every namespace" if self.namespace == ALL_NAMESPACES else self.namespace
            return f"{self.verb} {what} in namespace {where}"
        return f"{self.verb} {what}"


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    reason: str
    user: str
    role: str
    request: AccessRequest


def _rule(verbs: Iterable[str], resources: Iterable[str]) -> Rule:
    return Rule(frozenset(verbs), frozenset(resources))


_READABLE = (
    "nodes",
    "workloads",
    "replicas",
    "logs",
    "events",
    "coordinators",
    "ca",
    "policies",
    "metrics",
    "console",
    "services",
    "netpolicies",
    "volumes",
    "configs",
    "s3buckets",
    "s3layout",
)
BUILTIN_ROLES: Mapping[str, Role] = {
    r.name: r
    for r in (
        Role("admin", (_rule([ALL], [ALL]),), "everything", builtin=True),
        Role(
            "operator",
            (
                _rule(
                    VERBS,
                    [
                        *("nodes", "workloads", "replicas", "logs", "secrets", "configs"),
                        *("netpolicies", "s3keys", "s3buckets", "s3layout"),
                    ],
                ),
                _rule(READ_VERBS, [*_READABLE, "roles"]),
            ),
            "nodes and workloads: cordon, drain, remove nodes; run and scale workloads",
            builtin=True,
        ),
        Role(
            "developer",
            (
                _rule(VERBS, ["workloads", "replicas", "logs"]),
                _rule(READ_VERBS, ["nodes", "policies", "netpolicies"]),
            ),
            "workloads in the namespaces bound to the user (default: default); reads nodes",
            builtin=True,
        ),
        Role(
            "viewer",
            (_rule(READ_VERBS, _READABLE),),
            "read-only: " + ", ".join(_READABLE),
            builtin=True,
        ),
    )
}


def _in(namespace: str, allowed: Iterable[str] | None) -> bool:
    if allowed is None:
        return True
    return namespace != ALL_NAMESPACES and namespace in allowed


def decide(user: User, role: Role | None, req: AccessRequest) -> AccessDecision:
    """Allow or deny ``req`` for ``user`` holding ``role`` (None: the role does not exist)."""

    def deny(why: str) -> AccessDecision:
        return AccessDecision(False, why, user.name, user.role, req)

    who = f"user {user.name} (role {user.role})"
    if role is None:
        return deny(
            f"{who} may not {req.describe()}: role {user.role!r} does not exist "
            "(it was deleted?); bind the user to an existing role"
        )
    namespaced = req.resource in NAMESPACED
    granting = [r for r in role.rules if r.grants(req.verb, req.resource)]
    if not granting:
        return deny(
            f"{who} may not {req.describe()}: role {role.name} grants no {req.verb!r} on "
            f"{req.resource!r}"
        )
    if not namespaced:
        return AccessDecision(
            True, f"role {role.name} allows {req.describe()}", user.name, role.name, req
        )
    if not _in(req.namespace, user.namespaces):
        bound = ", ".join(user.namespaces or ())
        hint = (
            "name a namespace (`get workloads -n NS`, ?namespace=NS)"
            if req.namespace == ALL_NAMESPACES
            else f"bind the user to namespace {req.namespace}"
        )
        return deny(f"{who} may not {req.describe()}: the user is bound to {bound}; {hint}")
    if not any(_in(req.namespace, r.namespaces) for r in granting):
        scopes = sorted({n for r in granting for n in (r.namespaces or ())})
        return deny(
            f"{who} may not {req.describe()}: role {role.name} allows {req.verb!r} on "
            f"{req.resource!r} only in {', '.join(scopes)}"
        )
    return AccessDecision(
        True, f"role {role.name} allows {req.describe()}", user.name, role.name, req
    )


# ---- parsing -------------------------------------------------------------------------------


def _names(raw: Any, path: str, known: tuple[str, ...], problems: list[str]) -> frozenset[str]:
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        problems.append(f"{path}: expected a non-empty list of strings")
        return frozenset()
    unknown = sorted({x for x in raw if x != ALL and x not in known})
    if unknown:
        problems.append(
            f"{path}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)}, *)"
        )
    return frozenset(raw)


def parse_namespaces(raw: Any, path: str, problems: list[str]) -> tuple[str, ...] | None:
    """A list of namespace names, or None (absent, or ``["*"]``: every namespace)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        problems.append(f"{path}: expected a non-empty list of namespace names")
        return None
    if ALL_NAMESPACES in raw:
        return None
    bad = [x for x in raw if not is_valid_id(x)]
    if bad:
        problems.append(f"{path}: {', '.join(map(repr, bad))} not a namespace name (a DNS label)")
    return tuple(sorted(set(raw)))


def parse_role(data: Any, path: str = "role") -> Role:
    """A custom role from plain data; every problem named with its path (``ValidationError``).

    ``{"name": "deployer", "rules": [{"verbs": ["create", "update"],
    "resources": ["workloads"], "namespaces": ["web"]}]}``
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ValidationError(f"{path}: expected an object with name and rules")
    unknown = sorted(set(data) - {"name", "description", "rules", "kind"})
    if unknown:
        problems.append(f"{path}: unknown field(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not is_valid_id(name):
        problems.append(f"{path}.name: {name!r} must be a DNS label (a-z, 0-9, '-')")
        name = ""
    elif name in BUILTIN_ROLES:
        problems.append(f"{path}.name: {name!r} is a built-in role and cannot be redefined")
    rules_raw = data.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_raw, list) or not rules_raw:
        problems.append(f"{path}.rules: expected a non-empty list of rules")
        rules_raw = []
    for i, r in enumerate(rules_raw):
        rp = f"{path}.rules[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{rp}: expected an object with verbs and resources")
            continue
        extra = sorted(set(r) - {"verbs", "resources", "namespaces"})
        if extra:
            problems.append(f"{rp}: unknown field(s) {', '.join(extra)}")
        ns = parse_namespaces(r.get("namespaces"), f"{rp}.namespaces", problems)
        rules.append(
            Rule(
                _names(r.get("verbs"), f"{rp}.verbs", VERBS, problems),
                _names(r.get("resources"), f"{rp}.resources", RESOURCES, problems),
                frozenset(ns) if ns is not None else None,
            )
        )
    desc = data.get("description", "")
    if not isinstance(desc, str):
        problems.append(f"{path}.description: expected a string")
        desc = ""
    if problems:
        raise ValidationError(problems)
    return Role(name, tuple(rules), desc)


def role_to_data(role: Role) -> dict[str, Any]:
    d = role.to_dict()
    d.pop("builtin")
    return d
