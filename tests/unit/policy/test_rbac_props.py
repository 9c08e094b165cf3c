"""Properties of ``rbac.decide`` over random roles, bindings and requests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.policy.rbac import (
    ALL,
    BUILTIN_ROLES,
    NAMESPACED,
    RESOURCES,
    VERBS,
    AccessRequest,
    Role,
    Rule,
    User,
    decide,
)

NS = ["a", "b", "c"]
names = st.frozensets(st.sampled_from(NS), min_size=1)
rules = st.builds(
    Rule,
    st.frozensets(st.sampled_from([*VERBS, ALL]), min_size=1),
    st.frozensets(st.sampled_from([*RESOURCES, ALL]), min_size=1),
    st.none() | names,
)
roles = st.builds(Role, st.just("r"), st.lists(rules, max_size=4).map(tuple))
bindings = st.none() | names.map(lambda s: tuple(sorted(s)))
requests = st.builds(
    lambda v, r, ns: AccessRequest(v, r, ns if r in NAMESPACED else ""),
    st.sampled_from(VERBS),
    st.sampled_from(RESOURCES),
    st.sampled_from([*NS, "*"]),
)


@settings(max_examples=50)
@given(roles, rules, bindings, requests)
def test_adding_a_rule_never_takes_a_permission_away(
    role: Role, extra: Rule, ns: tuple[str, ...] | None, req: AccessRequest
) -> None:
    user = User("u", "r", ns)
    if decide(user, role, req).allowed:
        assert decide(user, Role("r", (*role.rules, extra)), req).allowed


@settings(max_examples=50)
@given(roles, names, requests)
def test_a_narrower_binding_never_grants_more(
    role: Role, ns: frozenset[str], req: AccessRequest
) -> None:
    wide = decide(User("u", "r", None), role, req).allowed
    narrow = decide(User("u", "r", tuple(sorted(ns))), role, req).allowed
    assert wide or not narrow


@settings(max_examples=50)
@given(roles, bindings, requests)
def test_every_namespace_needs_no_namespace_limit(
    role: Role, ns: tuple[str, ...] | None, req: AccessRequest
) -> None:
    d = decide(User("u", "r", ns), role, req)
    if d.allowed and req.namespace == "*":
        assert ns is None
        assert any(r.namespaces is None and r.grants(req.verb, req.resource) for r in role.rules)
    if not d.allowed:  # a refusal always names the verb and the resource
        assert req.verb in d.reason and req.resource in d.reason


@settings(max_examples=50)
@given(bindings, requests)
def test_admin_allows_all_and_viewer_only_reads(
    ns: tuple[str, ...] | None, req: AccessRequest
) -> None:
    # admin bound to namespaces is admin there only
    in_scope = req.resource not in NAMESPACED or ns is None or req.namespace in ns
    assert decide(User("u", "admin", ns), BUILTIN_ROLES["admin"], req).allowed is in_scope
    if decide(User("u", "viewer", ns), BUILTIN_ROLES["viewer"], req).allowed:
        assert req.verb in ("get", "list")
