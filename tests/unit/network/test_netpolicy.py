"""Network policy: the decision table, bad documents, and the compiled nftables lines
answering exactly as the decision does (every source x destination x port of a small
cluster, over several policy sets)."""

from __future__ import annotations

import itertools

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.network.netpolicy import WorkloadRef, decide, parse_policy
from cloudless.network.netpolicy_nft import Endpoint, compile_rules, evaluate, render


def w(name: str, ns: str, **labels: str) -> WorkloadRef:
    return WorkloadRef(name, ns, labels)


WEB = w("web", "web", app="web", tier="front")
ADMIN = w("admin", "web", app="admin")
DB = w("db", "db", app="db")
CACHE = w("cache", "db", app="cache")
BATCH = w("batch", "jobs", app="batch")
ALL = [WEB, ADMIN, DB, CACHE, BATCH]

DB_FROM_WEB = parse_policy(
    {
        "name": "db-from-web",
        "namespace": "db",
        "selector": {"app": "db"},
        "ingress": [
            {
                "from": [{"namespace": "web", "selector": {"tier": "front"}}],
                "ports": [{"port": 5432}],
            }
        ],
    }
)
NO_BATCH = parse_policy(
    {
        "name": "no-batch",
        "namespace": "db",
        "ingress": [{"action": "deny", "from": [{"namespace": "jobs"}]}],
    }
)
BATCH_ANYWHERE = parse_policy(
    {
        "name": "batch-anywhere",
        "namespace": "db",
        "ingress": [{"from": [{"selector": {"app": "batch"}}]}],  # namespace "*"
    }
)
CACHE_LOCKDOWN = parse_policy(
    {
        "name": "cache-lockdown",
        "namespace": "db",
        "selector": {"app": "cache"},
        "ingress": [{"action": "deny", "from": [{"namespace": "db"}], "ports": [{"port": 22}]}],
    }
)

# (src, dst, proto, port, policies, allowed, reason fragment)
CASES = [
    (WEB, ADMIN, "tcp", 80, [], True, "same namespace web"),  # default allow within
    (WEB, DB, "tcp", 5432, [], False, "denied by default"),  # default deny across
    (WEB, DB, "tcp", 5432, [DB_FROM_WEB], True, "allowed by policy db-from-web"),
    (WEB, DB, "tcp", 22, [DB_FROM_WEB], False, "denied by default"),  # port not listed
    (WEB, DB, "udp", 5432, [DB_FROM_WEB], False, "denied by default"),  # tcp only
    (ADMIN, DB, "tcp", 5432, [DB_FROM_WEB], False, "denied by default"),  # no tier=front
    (WEB, CACHE, "tcp", 5432, [DB_FROM_WEB], False, "denied by default"),  # not selected
    (BATCH, DB, "tcp", 5432, [BATCH_ANYWHERE], True, "batch-anywhere"),  # "*" namespace
    # deny beats allow, whatever the policy names
    (BATCH, DB, "tcp", 5432, [BATCH_ANYWHERE, NO_BATCH], False, "denied by policy no-batch"),
    # deny beats the same-namespace default, only on the port it names
    (DB, CACHE, "tcp", 22, [CACHE_LOCKDOWN], False, "cache-lockdown"),
    (DB, CACHE, "tcp", 6379, [CACHE_LOCKDOWN], True, "same namespace db"),
]


@pytest.mark.parametrize(("src", "dst", "proto", "port", "pols", "allowed", "fragment"), CASES)
def test_decide(
    src: WorkloadRef,
    dst: WorkloadRef,
    proto: str,
    port: int,
    pols: list,  # type: ignore[type-arg]
    allowed: bool,
    fragment: str,
) -> None:
    v = decide(src, dst, proto, port, pols)
    assert v.allowed == allowed, v.reason
    assert fragment in v.reason


ENDPOINTS = [
    Endpoint("10.8.0.2", WEB),
    Endpoint("10.8.0.3", WEB),
    Endpoint("10.8.1.2", ADMIN),
    Endpoint("10.8.2.2", DB),
    Endpoint("10.8.2.3", CACHE),
    Endpoint("10.8.3.2", BATCH),
]
POLICY_SETS = [
    [],
    [DB_FROM_WEB],
    [DB_FROM_WEB, NO_BATCH],
    [BATCH_ANYWHERE, NO_BATCH, CACHE_LOCKDOWN],
    [DB_FROM_WEB, BATCH_ANYWHERE, CACHE_LOCKDOWN],
]


@pytest.mark.parametrize("pols", POLICY_SETS)
def test_compiled_lines_answer_like_decide(pols: list) -> None:  # type: ignore[type-arg]
    compiled = compile_rules(pols, ENDPOINTS, ENDPOINTS)
    for src, dst, (proto, port) in itertools.product(
        ENDPOINTS, ENDPOINTS, [("tcp", 5432), ("udp", 5432), ("tcp", 22), ("tcp", 80)]
    ):
        line = evaluate(compiled[dst.workload], src.ip, proto, port)
        want = decide(src.workload, dst.workload, proto, port, pols)
        assert (line.verdict == "accept") == want.allowed, (src, dst, proto, port, line, want)


def test_render_is_one_atomic_table() -> None:
    text = render([DB_FROM_WEB], ENDPOINTS, [ENDPOINTS[3]], "10.8.0.0/16")
    lines = text.splitlines()
    assert lines[:3] == [
        "table inet cloudless_policy",
        "delete table inet cloudless_policy",
        "table inet cloudless_policy {",
    ]
    assert "\t\telements = { 10.8.2.2 : goto to_0 }" in lines
    assert "\t\tip saddr 10.8.0.0/16 ip daddr vmap @by_destination" in lines
    # allow web's two front-end replicas on 5432, then the namespace, then drop
    chain = lines[lines.index("\tchain to_0 {") + 1 : -2]
    assert chain == [
        '\t\tcomment "db/db"',
        "\t\tip saddr { 10.8.0.2, 10.8.0.3 } meta l4proto tcp th dport { 5432 } accept "
        'comment "db-from-web ingress[0] allow"',
        '\t\tip saddr { 10.8.2.2, 10.8.2.3 } accept comment "same namespace db"',
        '\t\tdrop comment "other namespaces: denied by default"',
    ]


BAD = [
    ("a list", ["x"], "policy: expected a mapping"),
    ({"name": "Bad_Name", "ingress": [{"from": [{"namespace": "a"}]}]}, "name: 'Bad_Name'"),
    ({"name": "p", "namespace": "NS", "ingress": []}, "namespace: 'NS'"),
    ({"name": "p", "ingress": []}, "ingress: a non-empty list"),
    ({"name": "p", "egress": [], "ingress": [{"from": [{"namespace": "a"}]}]}, "egress: a non"),
    ({"name": "p", "outgress": [], "ingress": [{"from": [{}]}]}, "outgress: unknown field"),
    (
        {"name": "p", "ingress": [{"action": "permit", "from": [{"namespace": "a"}]}]},
        "ingress[0].action: 'permit'",
    ),
    ({"name": "p", "ingress": [{"from": []}]}, "ingress[0].from: a non-empty list"),
    ({"name": "p", "ingress": [{"from": [{}]}]}, "ingress[0].from[0]: expected a mapping"),
    (
        {"name": "p", "ingress": [{"from": [{"namespace": "a b"}]}]},
        "ingress[0].from[0].namespace: 'a b'",
    ),
    (
        {"name": "p", "ingress": [{"from": [{"selector": {"app": 3}}]}]},
        "ingress[0].from[0].selector.app: 3 is not a label value",
    ),
    (
        {"name": "p", "ingress": [{"from": [{"namespace": "a"}], "ports": [{"port": 0}]}]},
        "ingress[0].ports[0].port: 0",
    ),
    (
        {
            "name": "p",
            "ingress": [
                {"from": [{"namespace": "a"}], "ports": [{"port": 80, "protocol": "sctp"}]}
            ],
        },
        "ingress[0].ports[0].protocol: 'sctp'",
    ),
    (
        {"name": "p", "ingress": [{"from": [{"namespace": "a"}], "ports": [{"port": True}]}]},
        "ingress[0].ports[0].port: True",
    ),
    (
        {"name": "p", "selector": ["app"], "ingress": [{"from": [{"namespace": "a"}]}]},
        "selector: expected a mapping",
    ),
]


@pytest.mark.parametrize(("doc", "fragment"), [(b[0], b[-1]) for b in BAD])
def test_bad_documents_name_the_field(doc: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_policy(doc)
    assert fragment in str(e.value) or any(fragment in p for p in e.value.problems), e.value


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as e:
        parse_policy({"name": "X", "namespace": "Y", "ingress": "z"})
    assert len(e.value.problems) == 3
