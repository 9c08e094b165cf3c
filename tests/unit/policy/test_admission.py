"""CEL admission policies: the issue's examples as a table, bad expressions, run-time
errors, time budgets, dry-run and namespace scoping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.workload_codec import parse_workload_data, workload_to_dict
from cloudless.policy import admission
from cloudless.policy.admission import parse_policy, request_variables
from cloudless.policy.expressions import ExpressionError, compile_expression, nesting

DEV = {"name": "dana", "role": "developer", "namespaces": ["web"]}
ADMIN = {"name": "admin", "role": "admin", "namespaces": ["*"]}


def admit(policies: Any, variables: Any, **kw: Any) -> admission.Verdict:
    """``admission.admit`` with a timer that never moves, unless a test passes one: only the
    time-budget tests may depend on time."""
    kw.setdefault("timer", lambda: 0.0)
    return admission.admit(policies, variables, **kw)


def spec(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "shop",
        "image": "registry.local/shop:1",
        "namespace": "web",
        "labels": {"team": "a"},
        "resources": {"cpu": "500m", "memory": "256Mi"},
        "replicas": 2,
    }
    base.update(over)
    return workload_to_dict(parse_workload_data(base))


def policy(expr: str, **over: Any) -> Any:
    return parse_policy(
        {"name": "p", "validations": [{"expression": expr, "message": "no"}], **over}
    )


REGISTRY = '["registry.local/", "127.0.0.1:5000/"].exists(r, object.image.startsWith(r))'
NO_HOST_NET = '!("host-network" in object.labels) || object.labels["host-network"] != "true"'
CEILING = 'object.namespace != "web" || object.resources.memory <= 512 * 1024 * 1024'
LABELS = '["team"].all(k, k in object.labels)'
OWNED = (
    'user.role == "admin" || object.placement.node_selector.exists(e, e.key == "owner" '
    "&& e.values == [user.name])"
)
REPLICAS = 'request.verb == "create" || object.replicas <= oldObject.replicas * 2'

# (expression, object, user, allowed)  -- why
CASES = [
    (REGISTRY, spec(), DEV, True),  # registry.local/ prefix
    (REGISTRY, spec(image="docker.io/evil:1"), DEV, False),  # not a listed registry
    (NO_HOST_NET, spec(), DEV, True),
    (NO_HOST_NET, spec(labels={"team": "a", "host-network": "true"}), DEV, False),
    (CEILING, spec(), DEV, True),  # 256 Mi <= 512 Mi
    (CEILING, spec(resources={"cpu": "1", "memory": "1Gi"}), DEV, False),  # 1 Gi > 512 Mi
    (CEILING, spec(namespace="batch", resources={"cpu": "1", "memory": "1Gi"}), DEV, True),
    (LABELS, spec(), DEV, True),
    (LABELS, spec(labels={}), DEV, False),  # team missing
    (OWNED, spec(), ADMIN, True),  # admin places anywhere
    (OWNED, spec(), DEV, False),  # no owner selector
    (
        OWNED,
        spec(placement={"node_selector": [{"key": "owner", "operator": "in", "values": ["dana"]}]}),
        DEV,
        True,
    ),
]


@pytest.mark.parametrize(("expr", "obj", "user", "allowed"), CASES)
def test_examples(expr: str, obj: dict[str, Any], user: dict[str, Any], allowed: bool) -> None:
    v = admit([policy(expr)], request_variables(obj, user))
    assert v.allowed is allowed, v.denials
    if not allowed:
        assert "policy p: no (expression: " in v.message()
        assert expr in v.message()  # names the failing expression


def test_old_object_and_verb() -> None:
    p = policy(REPLICAS)
    old = spec(replicas=2)
    # 2 -> 4 is at most double; 2 -> 5 is not; a create has no old object to compare
    assert admit([p], request_variables(spec(replicas=4), DEV, old=old, verb="update")).allowed
    assert not admit([p], request_variables(spec(replicas=5), DEV, old=old, verb="update")).allowed
    assert admit([p], request_variables(spec(replicas=50), DEV)).allowed


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("object.image.startsWith(", "does not compile"),
        ("object.image ==", "does not compile"),
        ("", "is empty"),
        ("x" * 5000, "at most 4096"),
        ('obj.image == "x"', "unknown variable(s) obj"),
        (
            "object.ports.all(a, object.ports.all(b, object.ports.all(c, a + b + c > 0)))",
            "nested 3 deep",
        ),
    ],
)
def test_bad_expressions_are_refused(expr: str, expected: str) -> None:
    with pytest.raises(ExpressionError, match=None) as e:
        compile_expression(expr)
    assert expected in e.value.message


@pytest.mark.parametrize(
    ("source", "depth"),
    [
        ("object.replicas > 1", 0),
        ("object.ports.all(p, p > 0)", 1),
        ("object.ports.all(a, object.ports.exists(b, a == b))", 2),
        ('object.image.startsWith(".all(")', 0),  # inside a string: not a macro
        ("size(object.ports.filter(p, p > 1)) > 0 && object.env.all(k, k != '')", 1),
    ],
)
def test_nesting(source: str, depth: int) -> None:
    assert nesting(source) == depth


def test_policy_document_problems_are_listed_with_paths() -> None:
    with pytest.raises(ValidationError) as e:
        parse_policy(
            {
                "name": "Bad",
                "mode": "sometimes",
                "validations": [{"expression": "object.("}, {"expr": "true"}],
            }
        )
    text = e.value.message
    for part in (
        "policy.name",
        "policy.mode",
        "validations[0].expression: does not compile",
        "validations[1]",
    ):
        assert part in text


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('object.labels["owner"] == "x"', "no such key or field 'owner'"),  # missing key
        ("object.replicas / (object.replicas - 2) > 0", "ZeroDivisionError"),  # 2 replicas
        ("object.image + 1 == 2", "TypeError"),  # no such overload
        ("object.replicas", "returned 2, not true or false"),
    ],
)
def test_run_time_errors_deny_and_say_why(expr: str, expected: str) -> None:
    v = admit([policy(expr)], request_variables(spec(), DEV))
    assert not v.allowed
    assert "evaluation error" in v.denials[0].message and expected in v.denials[0].message


def _ticks(*values: float) -> Iterator[float]:
    yield from values


def test_over_budget_denies_even_when_true() -> None:
    # the wall clock says the request took 20 ms against a 10 ms budget; timing the policy
    # alone, the CPU timer says 20 ms too
    w = _ticks(0.0, 0.020)
    t = _ticks(0.0, 0.020)
    v = admit(
        [policy("true")],
        request_variables(spec(), DEV),
        budget_s=0.010,
        timer=lambda: next(t),
        wall=lambda: next(w),
    )
    assert not v.allowed and "timed out: evaluation took 20.0 ms" in v.denials[0].message


def test_a_really_slow_policy_times_out() -> None:
    # 2 nested comprehensions over 300 ports: 90,000 steps, far over a 1 ms budget
    slow = policy("object.ports.all(a, object.ports.all(b, a != 0 && b != 0))")
    obj = spec(ports=list(range(1, 301)))
    v = admit([slow], request_variables(obj, DEV), budget_s=0.001, timer=time.thread_time)
    assert not v.allowed and "timed out" in v.denials[0].message


def test_dry_run_reports_without_denying_and_namespaces_scope() -> None:
    warn = policy(LABELS, mode="dry-run")
    v = admit([warn], request_variables(spec(labels={}), DEV))
    assert v.allowed and v.warnings and v.warnings[0].policy == "p"
    scoped = policy(LABELS, namespaces=["batch"])
    assert admit([scoped], request_variables(spec(labels={}), DEV)).allowed  # web: not in scope
    assert not admit([scoped], request_variables(spec(labels={}, namespace="batch"), DEV)).allowed


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ('"team" in object.labels && object.image != ""', {"object": {"labels", "image"}}),
        ('object.image.startsWith("object.secret")', {"object": {"image"}}),  # in a string
        ("size(object) > 0", {"object": None}),  # the whole value
        ('object["image"] == "x"', {"object": None}),
        (
            "object.replicas <= oldObject.replicas",
            {"object": {"replicas"}, "oldObject": {"replicas"}},
        ),
        ('user.name == "x"', {"user": {"name"}}),
        ('size(user) == 3 && user.role != ""', {"user": None}),
    ],
)
def test_fields_read(source: str, fields: dict[str, Any]) -> None:
    from cloudless.policy.expressions import fields_read

    got = {k: (set(v) if v is not None else None) for k, v in fields_read(source).items()}
    assert got == fields


def test_trimmed_values_give_the_same_answers_as_whole_ones() -> None:
    # only labels is converted for the first; the whole object for the second
    obj = spec()
    for expr in ['"team" in object.labels', "size(object) > 3", 'object["image"] != ""']:
        assert admit([policy(expr)], request_variables(obj, DEV)).allowed, expr


@pytest.mark.parametrize(
    ("source", "exponent"),
    [
        ('"team" in object.labels', 0),  # linear at the top: always cheap
        ("object.ports.all(p, p > 0)", 1),  # n steps
        ("object.ports.all(p, p in [80, 443])", 2),  # `in` inside: n * n (conservative)
        ('object.env.all(k, k.startsWith("A"))', 2),  # a string scan inside: n * len
        ("object.ports.all(a, object.ports.all(b, a != b))", 2),
        ("object.ports.all(a, object.ports.all(b, a + b > 0))", 3),
        ('object.image.startsWith("x") && object.ports.all(p, p > 0)', 1),
        ('object.ports.all(p, p > 0) && "+" != "in"', 1),  # operators in strings: not counted
    ],
)
def test_cost_exponent(source: str, exponent: int) -> None:
    from cloudless.policy.expressions import cost_exponent

    assert cost_exponent(source) == exponent


def test_a_policy_too_costly_for_the_request_is_not_evaluated() -> None:
    # n^2 over 1,000 ports (the spec's limit is 1,024) = 1,000,000 steps > 200,000:
    # refused before evaluating
    quadratic = policy("object.ports.all(a, object.ports.all(b, a != b || a == b))")
    big = spec(ports=list(range(1, 1001)))
    started = time.perf_counter()
    v = admit([quadratic], request_variables(big, DEV), timer=time.thread_time)
    assert time.perf_counter() - started < 1.0  # evaluating would take seconds
    assert not v.allowed and "too costly" in v.denials[0].message
    assert "1000^2" in v.denials[0].message
    # 100 ports: 10,000 steps, evaluated
    assert admit([quadratic], request_variables(spec(ports=list(range(1, 101))), DEV)).allowed


@pytest.mark.parametrize(
    ("source", "subfields"),
    [
        ("object.resources.memory > 0", {"object": {"resources": {"memory"}}}),
        (
            'object.placement.node_selector.exists(e, e.key == "a")',
            {"object": {"placement": {"node_selector"}}},
        ),
        ('object.labels.exists(k, k == "a")', {"object": {"labels": None}}),  # a macro call
        ('"a" in object.labels', {"object": {"labels": None}}),  # the map as a whole
        ("object.image.size() > 0", {"object": {"image": None}}),  # a method on the field
        (
            "object.resources.cpu > 0 && size(object.resources) > 1",
            {"object": {"resources": None}},
        ),
    ],
)
def test_subfields_read(source: str, subfields: dict[str, Any]) -> None:
    from cloudless.policy.expressions import subfields_read

    got = {
        v: {t: (set(x) if x is not None else None) for t, x in per.items()}
        for v, per in subfields_read(source).items()
    }
    assert got == subfields


TRIM_CASES = [
    "object.resources.memory <= 512 * 1024 * 1024",
    "has(object.resources.memory) && !has(object.resources.gpu)",
    'has(object.labels.team) && object.labels.team == "a"',
    "has(object.labels.nobody)",
    "size(object.resources) == 4",
    'object.placement.node_selector.exists(e, e.key == "owner") || true',
    "object.placement.max_per_node == 0 && object.resources.cpu == '500m'",
    "size(object.placement) > 3 && object.placement.max_per_node == 0",
    'object.labels.exists(k, k == "team")',
    'user.name == "dana"',
    "size(user) == 3",
    'user["role"] == "developer"',
    "has(user.nobody)",
    '"web" in user.namespaces && user.role == "developer"',
    'user.namespaces.exists(n, n == "web") && object.replicas > 0',
]


@pytest.mark.parametrize("expr", TRIM_CASES)
def test_trimming_never_changes_an_answer(expr: str) -> None:
    from cloudless.policy.expressions import compile_expression, context, evaluate

    full = evaluate(compile_expression(expr), context(request_variables(spec(), DEV)))
    v = admit([policy(expr)], request_variables(spec(), DEV))
    assert v.allowed is (full is True), (expr, full, v)


def test_trimming_takes_every_policy_into_account() -> None:
    # the first would trim labels to {team}; the second needs every label
    a = parse_policy({"name": "a", "validations": [{"expression": "has(object.labels.team)"}]})
    b = parse_policy(
        {"name": "b", "validations": [{"expression": 'object.labels.exists(k, k == "app")'}]}
    )
    obj = spec(labels={"team": "x", "app": "y"})
    assert admit([a, b], request_variables(obj, DEV)).allowed


def test_the_cpu_clock_is_read_only_when_the_wall_clock_says_over_budget() -> None:
    reads: list[float] = []

    def timer() -> float:
        reads.append(0.0)
        return 0.0

    pols = [policy("true"), policy("object.replicas > 0"), policy("user.name != ''")]
    assert admit(pols, request_variables(spec(), DEV), timer=timer).allowed
    assert reads == []  # within budget by the wall clock: CPU time cannot be over it
    # descheduled for 20 ms of a 10 ms budget: each policy is timed on the CPU clock, and a
    # policy that used little CPU is not denied
    w = _ticks(0.0, 0.020)
    v = admit(
        pols, request_variables(spec(), DEV), budget_s=0.010, timer=timer, wall=lambda: next(w)
    )
    assert v.allowed and len(reads) == 2 * len(pols)
