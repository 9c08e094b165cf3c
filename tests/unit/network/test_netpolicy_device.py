"""What each device's policy table holds, from a cluster snapshot: which workloads are
policed (namespaces with a policy), the addresses of their sources, the wire form, and the
table the agent renders answering as ``decide`` does for every pair of a small cluster."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.errors import NetworkConfigError
from cloudless.network.netpolicy import WorkloadRef, decide, parse_policy
from cloudless.network.netpolicy_device import (
    ReplicaFacts,
    chains_from_pb,
    chains_to_pb,
    device_chains,
    endpoints,
    render_inputs,
)
from cloudless.network.netpolicy_nft import evaluate, render_compiled

WORKLOADS = {
    "web": ("web", {"app": "web", "tier": "front"}),
    "db": ("db", {"app": "db"}),
    "batch": ("jobs", {"app": "batch"}),
}
# web-0 on n1, db-0 and db-1 on n2, batch-0 on n1 (portless: "ip:0"), db-2 not running
REPLICAS = [
    ReplicaFacts("web", "n1", "10.42.0.2:80", True),
    ReplicaFacts("db", "n2", "10.42.1.2:5432", True),
    ReplicaFacts("db", "n2", "10.42.1.3:5432", True),
    ReplicaFacts("batch", "n1", "10.42.0.3:0", True),
    ReplicaFacts("db", "n2", "10.42.1.4:5432", False),
    ReplicaFacts("gone", "n2", "10.42.1.5:1", True),  # workload deleted: not an endpoint
    ReplicaFacts("web", "n1", "", True),  # no address reported yet
    ReplicaFacts("web", "n1", "192.168.1.5:80", True),  # on the device's network
    ReplicaFacts("web", "n1", "web:80", True),  # not an address
]
CLUSTER = endpoints(REPLICAS, WORKLOADS, ipaddress.IPv4Network("10.42.0.0/16"))

DB_FROM_WEB = parse_policy(
    {
        "name": "db-from-web",
        "namespace": "db",
        "ingress": [{"from": [{"namespace": "web"}], "ports": [{"port": 5432}]}],
    }
)


def test_endpoints_are_running_replicas_with_an_address() -> None:
    assert [(e.node_id, e.endpoint.ip, e.endpoint.workload.name) for e in CLUSTER] == [
        ("n1", "10.42.0.2", "web"),
        ("n1", "10.42.0.3", "batch"),
        ("n2", "10.42.1.2", "db"),
        ("n2", "10.42.1.3", "db"),
    ]


# (policies, node, expected chains as (namespace/workload, addresses, first line's sources))
CASES = [
    ([], "n2", []),  # no policy: no table anywhere
    ([DB_FROM_WEB], "n1", []),  # n1 hosts web and batch: their namespaces have no policy
    # n2 hosts db (2 replicas); the allow line's sources are web's one address
    ([DB_FROM_WEB], "n2", [("db/db", ("10.42.1.2", "10.42.1.3"), ("10.42.0.2",))]),
    ([DB_FROM_WEB], "n3", []),  # hosts nothing
]


@pytest.mark.parametrize(("policies", "node", "want"), CASES)
def test_device_chains(policies: list, node: str, want: list) -> None:  # type: ignore[type-arg]
    got = device_chains(policies, CLUSTER, node)
    assert [
        (f"{c.workload.namespace}/{c.workload.name}", c.addresses, c.lines[0].sources) for c in got
    ] == want


def test_chains_survive_the_wire_and_render_as_decide_answers() -> None:
    chains = device_chains([DB_FROM_WEB], CLUSTER, "n2")
    msg = pb.NetworkConfig(policy_chains=chains_to_pb(chains))
    back = chains_from_pb(pb.NetworkConfig.FromString(msg.SerializeToString()).policy_chains)
    assert [(c.addresses, c.lines) for c in back] == [(c.addresses, c.lines) for c in chains]
    compiled, local, egress = render_inputs(back)
    assert egress == {}
    doc = render_compiled(compiled, local, "10.42.0.0/16", egress=egress)
    assert "10.42.1.2 : goto to_0" in doc and "10.42.1.3 : goto to_0" in doc
    lines = back[0].lines
    db = WorkloadRef("db", "db", {"app": "db"})
    for src, port in itertools.product(CLUSTER, (5432, 22)):
        want = decide(src.endpoint.workload, db, "tcp", port, [DB_FROM_WEB]).allowed
        got = evaluate(lines, src.endpoint.ip, "tcp", port).verdict == "accept"
        assert got == want, (src, port)


def _chain(**kw: object) -> pb.NetworkPolicyChain:
    c = chains_to_pb(device_chains([DB_FROM_WEB], CLUSTER, "n2"))[0]
    for k, v in kw.items():
        if k == "address":
            c.addresses[0] = str(v)
        elif k == "source":
            c.lines[0].sources[0] = str(v)
        elif k == "last_source":
            c.lines[-1].any_source = False
            c.lines[-1].sources.append(str(v))
        else:
            setattr(c.lines[0], k, v)
    return c


BAD = [
    (_chain(address="10.42.1"), "network.policy_chains[0]: '10.42.1' is not an IPv4"),
    (_chain(source="x"), "network.policy_chains[0]: 'x' is not an IPv4"),
    (_chain(verdict="reject"), "policy_chains[0].lines[0].verdict: 'reject'"),
    (_chain(protocol="icmp"), "policy_chains[0].lines[0].protocol: 'icmp'"),
    (_chain(last_source="10.1.1.1"), "policy_chains[0].lines: must end with an unconditional"),
]


@pytest.mark.parametrize(("msg", "why"), BAD)
def test_a_chain_that_would_not_render_is_refused_by_field(
    msg: pb.NetworkPolicyChain, why: str
) -> None:
    with pytest.raises(NetworkConfigError, match=why.replace("[", r"\[").replace("]", r"\]")):
        chains_from_pb([msg])
