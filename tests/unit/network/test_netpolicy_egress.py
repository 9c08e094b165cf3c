"""Egress network policy: the decision table (``decide_egress``, ``decide_both``), bad
documents, the compiled egress lines answering exactly as the decision does, the rendered
table, and the chains' wire form."""

from __future__ import annotations

import itertools

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.network.errors import NetworkConfigError
from cloudless.network.netpolicy import (
    WorkloadRef,
    decide_both,
    decide_egress,
    parse_policy,
    policy_to_dict,
)
from cloudless.network.netpolicy_device import (
    PlacedEndpoint,
    chains_from_pb,
    chains_to_pb,
    device_chains,
    render_inputs,
)
from cloudless.network.netpolicy_nft import (
    Endpoint,
    compile_egress,
    evaluate,
    merged,
    render,
    render_compiled,
)


def w(name: str, ns: str, **labels: str) -> WorkloadRef:
    return WorkloadRef(name, ns, labels)


WEB = w("web", "web", app="web")
API = w("api", "web", app="api")
DB = w("db", "db", app="db")
BATCH = w("batch", "jobs", app="batch")

# web may reach db on 5432 and the payment provider's network on 443, nothing else
WEB_OUT = parse_policy(
    {
        "name": "web-out",
        "namespace": "web",
        "selector": {"app": "web"},
        "egress": [
            {"to": [{"namespace": "db"}], "ports": [{"port": 5432}]},
            {"to": [{"cidr": "203.0.113.0/24"}], "ports": [{"port": 443}]},
        ],
    }
)
# jobs may go anywhere except the metadata address and the db namespace
JOBS_OUT = parse_policy(
    {
        "name": "jobs-out",
        "namespace": "jobs",
        "egress": [
            {"action": "deny", "to": [{"cidr": "169.254.169.254/32"}, {"namespace": "db"}]},
            {"to": [{"cidr": "0.0.0.0/0"}]},
        ],
    }
)
# db accepts web (ingress), so web -> db needs web-out (egress) and this (ingress)
DB_IN = parse_policy(
    {
        "name": "db-in",
        "namespace": "db",
        "ingress": [{"from": [{"namespace": "web"}, {"namespace": "jobs"}]}],
    }
)

# (src, destination ip, destination workload, proto, port, policies, allowed, reason)
CASES = [
    (API, "10.8.2.2", DB, "tcp", 5432, [WEB_OUT], True, "no egress policy selects web/api"),
    (WEB, "10.8.2.2", DB, "tcp", 5432, [WEB_OUT], True, "allowed by policy web-out (egress[0])"),
    (WEB, "10.8.2.2", DB, "tcp", 22, [WEB_OUT], False, "limited by web-out"),  # port
    (WEB, "203.0.113.9", None, "tcp", 443, [WEB_OUT], True, "web-out (egress[1])"),
    (WEB, "203.0.114.9", None, "tcp", 443, [WEB_OUT], False, "no egress rule allows it"),
    (WEB, "10.8.1.2", API, "tcp", 80, [WEB_OUT], False, "limited by web-out"),  # same ns too
    (BATCH, "198.51.100.1", None, "udp", 53, [JOBS_OUT], True, "jobs-out (egress[1])"),
    # deny beats allow: the metadata address and db, though 0.0.0.0/0 is allowed
    (BATCH, "169.254.169.254", None, "tcp", 80, [JOBS_OUT], False, "denied by policy jobs-out"),
    (BATCH, "10.8.2.2", DB, "tcp", 5432, [JOBS_OUT], False, "denied by policy jobs-out"),
]


@pytest.mark.parametrize(
    ("src", "ip", "dst", "proto", "port", "pols", "allowed", "fragment"), CASES
)
def test_decide_egress(
    src: WorkloadRef,
    ip: str,
    dst: WorkloadRef | None,
    proto: str,
    port: int,
    pols: list,  # type: ignore[type-arg]
    allowed: bool,
    fragment: str,
) -> None:
    v = decide_egress(src, ip, dst, proto, port, pols)
    assert v.allowed == allowed, v.reason
    assert fragment in v.reason, v.reason


# both directions: (src, dst, port, policies, allowed, reason)
BOTH = [
    (WEB, DB, 5432, [WEB_OUT, DB_IN], True, "allowed by policy db-in"),
    (WEB, DB, 5432, [WEB_OUT], False, "denied by default"),  # egress yes, ingress no
    (BATCH, DB, 5432, [JOBS_OUT, DB_IN], False, "jobs-out (egress[0])"),  # egress no
]


@pytest.mark.parametrize(("src", "dst", "port", "pols", "allowed", "fragment"), BOTH)
def test_decide_both(
    src: WorkloadRef,
    dst: WorkloadRef,
    port: int,
    pols: list,  # type: ignore[type-arg]
    allowed: bool,
    fragment: str,
) -> None:
    v = decide_both(src, dst, "10.8.2.2", "tcp", port, pols)
    assert v.allowed == allowed and fragment in v.reason, v.reason


ENDPOINTS = [
    Endpoint("10.8.0.2", WEB),
    Endpoint("10.8.0.3", WEB),
    Endpoint("10.8.1.2", API),
    Endpoint("10.8.2.2", DB),
    Endpoint("10.8.3.2", BATCH),
]
OUTSIDE = ["203.0.113.9", "203.0.114.9", "169.254.169.254", "198.51.100.1"]


@pytest.mark.parametrize("pols", [[], [WEB_OUT], [JOBS_OUT], [WEB_OUT, JOBS_OUT, DB_IN]])
def test_compiled_egress_lines_answer_like_decide(pols: list) -> None:  # type: ignore[type-arg]
    compiled = compile_egress(pols, ENDPOINTS, ENDPOINTS)
    targets = [(e.ip, e.workload) for e in ENDPOINTS] + [(ip, None) for ip in OUTSIDE]
    for src, (ip, dst), (proto, port) in itertools.product(
        ENDPOINTS, targets, [("tcp", 5432), ("tcp", 443), ("udp", 53), ("tcp", 80)]
    ):
        want = decide_egress(src.workload, ip, dst, proto, port, pols)
        lines = compiled.get(src.workload)
        got = True if lines is None else evaluate(lines, ip, proto, port).verdict == "accept"
        assert got == want.allowed, (src, ip, proto, port, want)


def test_render_egress_chain() -> None:
    local = [ENDPOINTS[0], ENDPOINTS[1]]  # web's two replicas on this device
    text = render([WEB_OUT], ENDPOINTS, local, "10.8.0.0/16")
    lines = text.splitlines()
    assert "\t\telements = { 10.8.0.2 : jump from_0, 10.8.0.3 : jump from_0 }" in lines
    # egress first (jump: an allowed packet returns), then the ingress map
    fwd = lines.index("\t\tip saddr vmap @by_source")
    assert lines[fwd + 1] == "\t\tip saddr 10.8.0.0/16 ip daddr vmap @by_destination"
    chain = lines[lines.index("\tchain from_0 {") + 1 : -2]
    assert chain == [
        '\t\tcomment "egress web/web"',
        "\t\tip daddr { 10.8.2.2 } meta l4proto tcp th dport { 5432 } return "
        'comment "web-out egress[0] allow"',
        "\t\tip daddr { 203.0.113.0/24 } meta l4proto tcp th dport { 443 } return "
        'comment "web-out egress[1] allow"',
        '\t\tdrop comment "egress: nothing allows it"',
    ]


def test_merged_sets_never_overlap() -> None:
    # nft refuses overlapping ranges in one set: an address inside a network goes
    assert merged(["10.8.2.2", "10.8.0.0/16", "192.0.2.1"]) == ("10.8.0.0/16", "192.0.2.1")
    assert merged(["10.0.0.0/25", "10.0.0.128/25"]) == ("10.0.0.0/24",)


def test_device_chains_and_wire_round_trip() -> None:
    cluster = [
        PlacedEndpoint("n1", ENDPOINTS[0]),
        PlacedEndpoint("n2", ENDPOINTS[3]),
        PlacedEndpoint("n2", ENDPOINTS[4]),
    ]
    pols = [WEB_OUT, JOBS_OUT, DB_IN]
    n1 = device_chains(pols, cluster, "n1")
    assert [(c.workload.name, c.egress) for c in n1] == [("web", True)]  # web: no ingress
    n2 = device_chains(pols, cluster, "n2")
    assert sorted((c.workload.name, c.egress) for c in n2) == [("batch", True), ("db", False)]
    back = chains_from_pb(chains_to_pb(n2))
    assert [(c.workload.name, c.egress, c.lines) for c in back] == [
        (c.workload.name, c.egress, c.lines) for c in n2
    ]
    compiled, local, egress = render_inputs(back)
    text = render_compiled(compiled, local, "10.8.0.0/16", egress=egress)
    assert "10.8.3.2 : jump from_0" in text and "10.8.2.2 : goto to_0" in text
    assert "ip daddr { 10.8.2.2, 169.254.169.254 } drop" in text


def test_wire_refuses_overlapping_or_bad_networks() -> None:
    cluster = [PlacedEndpoint("n1", ENDPOINTS[4])]
    msgs = chains_to_pb(device_chains([JOBS_OUT], cluster, "n1"))
    msgs[0].lines[0].sources[:] = ["10.0.0.0/8", "10.1.0.0/16"]
    with pytest.raises(NetworkConfigError, match=r"lines\[0\].sources: overlapping"):
        chains_from_pb(msgs)
    msgs[0].lines[0].sources[:] = ["10.0.0.1/8"]
    with pytest.raises(NetworkConfigError, match=r"lines\[0\].sources: .*host bits"):
        chains_from_pb(msgs)


def test_round_trip_of_the_document() -> None:
    for p in (WEB_OUT, JOBS_OUT, DB_IN):
        assert parse_policy(policy_to_dict(p)) == p


BAD = [
    ({"name": "p", "egress": [{"to": []}]}, "egress[0].to: a non-empty list"),
    ({"name": "p", "egress": [{"from": [{"namespace": "a"}]}]}, "egress[0].from: unknown"),
    ({"name": "p", "egress": [{"to": [{"cidr": "10.0.0.1/8"}]}]}, "egress[0].to[0].cidr: '10."),
    ({"name": "p", "egress": [{"to": [{"cidr": "::/0"}]}]}, "not an IPv4 network"),
    ({"name": "p", "egress": [{"to": [{"cidr": 10}]}]}, "must be a string like"),
    (
        {"name": "p", "egress": [{"to": [{"cidr": "10.0.0.0/8", "namespace": "a"}]}]},
        "egress[0].to[0]: cidr stands alone",
    ),
    (
        {"name": "p", "ingress": [{"from": [{"cidr": "10.0.0.0/8"}]}]},
        "ingress[0].from[0].cidr: only egress rules take networks",
    ),
    ({"name": "p"}, "ingress: a non-empty list of rules is required (or egress)"),
    ({"name": "p", "egress": "all"}, "egress: a non-empty list"),
]


@pytest.mark.parametrize(("doc", "fragment"), BAD)
def test_bad_egress_documents_name_the_field(doc: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_policy(doc)
    assert any(fragment in p for p in e.value.problems) or fragment in str(e.value), e.value
