"""Role x verb x resource x namespace, as a table; custom roles and their bad input."""

from __future__ import annotations

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.policy.rbac import (
    BUILTIN_ROLES,
    RESOURCES,
    VERBS,
    AccessRequest,
    User,
    decide,
    parse_role,
)

ADMIN = User("ada", "admin")
OPERATOR = User("otto", "operator")
DEV = User("dana", "developer", ("web", "shop"))
VIEWER = User("vic", "viewer")

# (user, verb, resource, namespace, allowed)  -- why
CASES = [
    (ADMIN, "delete", "users", "", True),  # admin: * on *
    (ADMIN, "create", "workloads", "anything", True),
    (ADMIN, "list", "workloads", "*", True),  # every namespace: admin has no limit
    (OPERATOR, "delete", "nodes", "", True),  # operator: nodes...
    (OPERATOR, "update", "workloads", "kube", True),  # ...and workloads in any namespace
    (OPERATOR, "list", "workloads", "*", True),
    (OPERATOR, "create", "users", "", False),  # not users
    (OPERATOR, "create", "tokens", "", False),  # nor tokens
    (OPERATOR, "list", "roles", "", True),  # reads roles
    (DEV, "create", "workloads", "web", True),  # bound to web and shop
    (DEV, "delete", "workloads", "shop", True),
    (DEV, "get", "logs", "web", True),
    (DEV, "create", "workloads", "default", False),  # not bound to default
    (DEV, "list", "workloads", "*", False),  # every namespace exceeds its binding
    (DEV, "update", "nodes", "", False),  # reads nodes only
    (DEV, "get", "nodes", "", True),
    (DEV, "list", "events", "", False),  # events name other namespaces' workloads
    (VIEWER, "list", "workloads", "*", True),  # viewer: reads everywhere
    (VIEWER, "get", "logs", "web", True),
    (VIEWER, "update", "workloads", "web", False),  # never writes
    (VIEWER, "delete", "nodes", "", False),
    (VIEWER, "list", "tokens", "", False),  # token records are not for viewers
    (VIEWER, "list", "audit", "", False),
    (OPERATOR, "create", "netpolicies", "", True),  # network policies: operators write them
    (DEV, "create", "netpolicies", "", False),  # cluster-scoped: a developer only reads
    (DEV, "list", "netpolicies", "", True),  # (why is my traffic refused?)
    (VIEWER, "get", "netpolicies", "", True),
    (VIEWER, "delete", "netpolicies", "", False),
]


@pytest.mark.parametrize(("user", "verb", "resource", "ns", "allowed"), CASES)
def test_builtin_roles(user: User, verb: str, resource: str, ns: str, allowed: bool) -> None:
    d = decide(user, BUILTIN_ROLES[user.role], AccessRequest(verb, resource, ns, "x"))
    assert d.allowed is allowed, d.reason
    if not allowed:  # every refusal names who, which role, the verb and the resource
        for word in (user.name, user.role, verb, resource):
            assert word in d.reason


def test_admin_allows_every_verb_on_every_resource_and_viewer_writes_nothing() -> None:
    for verb in VERBS:
        for res in RESOURCES:
            req = AccessRequest(verb, res, "ns1")
            assert decide(ADMIN, BUILTIN_ROLES["admin"], req).allowed
            viewer = decide(VIEWER, BUILTIN_ROLES["viewer"], req).allowed
            assert not viewer or verb in ("get", "list")


CUSTOM = parse_role(
    {
        "name": "deployer",
        "rules": [
            {"verbs": ["create", "update"], "resources": ["workloads"], "namespaces": ["web"]},
            {"verbs": ["get"], "resources": ["*"]},
        ],
    }
)


@pytest.mark.parametrize(
    ("user", "verb", "resource", "ns", "allowed", "why"),
    [
        (User("c", "deployer"), "create", "workloads", "web", True, "rule 1, in web"),
        (User("c", "deployer"), "create", "workloads", "db", False, "rule 1 is web only"),
        (User("c", "deployer"), "delete", "workloads", "web", False, "no rule grants delete"),
        (User("c", "deployer"), "get", "workloads", "db", True, "rule 2: get anything"),
        (User("c", "deployer"), "get", "tokens", "", True, "rule 2, cluster-scoped"),
        (User("c", "deployer", ("db",)), "create", "workloads", "web", False, "bound to db"),
        (User("c", "deployer", ("web",)), "create", "workloads", "web", True, "both allow web"),
    ],
)
def test_custom_role(
    user: User, verb: str, resource: str, ns: str, allowed: bool, why: str
) -> None:
    assert decide(user, CUSTOM, AccessRequest(verb, resource, ns)).allowed is allowed, why


def test_missing_role_denies_with_reason() -> None:
    d = decide(User("z", "gone"), None, AccessRequest("get", "nodes"))
    assert not d.allowed and "role 'gone' does not exist" in d.reason


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"name": "r", "rules": [{"verbs": ["launch"], "resources": ["workloads"]}]},
            "unknown 'launch'",
        ),
        (
            {"name": "r", "rules": [{"verbs": ["get"], "resources": ["secrets-x"]}]},
            "unknown 'secrets-x'",
        ),
        ({"name": "admin", "rules": [{"verbs": ["get"], "resources": ["nodes"]}]}, "built-in role"),
        ({"name": "Bad_Name", "rules": [{"verbs": ["get"], "resources": ["nodes"]}]}, "DNS label"),
        ({"name": "r", "rules": []}, "non-empty list of rules"),
        ({"name": "r", "rules": [{"verbs": "get", "resources": ["nodes"]}]}, "list of strings"),
        (
            {"name": "r", "rules": [{"verbs": ["get"], "resources": ["nodes"], "ns": ["a"]}]},
            "unknown field(s) ns",
        ),
        (
            {
                "name": "r",
                "rules": [{"verbs": ["get"], "resources": ["workloads"], "namespaces": ["UP"]}],
            },
            "not a namespace name",
        ),
        ("rules: everything", "expected an object"),
    ],
)
def test_bad_roles_are_refused_with_the_path(doc: object, expected: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_role(doc)
    assert expected in e.value.message


def test_role_round_trips() -> None:
    from cloudless.policy.rbac import role_to_data

    assert parse_role(role_to_data(CUSTOM)) == CUSTOM
