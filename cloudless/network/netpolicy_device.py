"""What one device's policy table needs, from a cluster snapshot (pure), and its wire form.

Rules of ``device_chains``:

* an endpoint is a replica that is desired and observed RUNNING and reports an address in
  the container range (``Replica.endpoint`` "ip:port"; "ip:0" for a replica without ports;
  a replica on its device's network reports the device's address and is not one), with its
  workload's namespace and labels;
* a namespace is *isolated* when at least one network policy with ingress rules lives in it;
  only workloads of isolated namespaces have their ingress policed (as a Kubernetes pod is
  isolated once a policy selects it), so a cluster without policies programs no table;
* a workload is *egress-limited* when a policy with egress rules selects it;
* a device gets one ingress chain per local workload of an isolated namespace, with the lines
  ``netpolicy_nft.compile_rules`` gives it (deny rules, allow rules, same namespace, drop),
  the sources resolved to the addresses of every endpoint in the cluster *now*, and one
  egress chain per local egress-limited workload (``compile_egress``: deny, allow, drop;
  destinations are endpoint addresses and the rules' networks);
* no chain: the agent removes its policy table.

``chains_to_pb``/``chains_from_pb`` carry the chains in ``NetworkConfig.policy_chains``; the
agent renders them with ``netpolicy_nft.render_compiled`` and applies them atomically.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.errors import NetworkConfigError
from cloudless.network.netpolicy import NetworkPolicy, WorkloadRef
from cloudless.network.netpolicy_nft import Endpoint, Match, compile_egress, compile_rules


@dataclass(frozen=True)
class PlacedEndpoint:
    node_id: str
    endpoint: Endpoint


@dataclass(frozen=True)
class Chain:
    workload: WorkloadRef
    addresses: tuple[str, ...]
    lines: tuple[Match, ...]
    egress: bool = False  # lines match destinations of connections the workload starts


@dataclass(frozen=True)
class ReplicaFacts:
    """What the decider reads of a replica (the coordinator builds these from its records)."""

    workload: str
    node_id: str
    endpoint: str
    running: bool


def endpoints(
    replicas: Iterable[ReplicaFacts],
    workloads: Mapping[str, tuple[str, Mapping[str, str]]],
    containers: ipaddress.IPv4Network,
) -> list[PlacedEndpoint]:
    """Running replicas with an address in ``containers``, with their workload's (namespace,
    labels)."""
    out = []
    for r in replicas:
        w = workloads.get(r.workload)
        if not r.running or w is None or not r.endpoint:
            continue
        ip = r.endpoint.rsplit(":", 1)[0]
        try:
            if ipaddress.IPv4Address(ip) not in containers:
                continue
        except ValueError:
            continue
        ns, labels = w
        out.append(PlacedEndpoint(r.node_id, Endpoint(ip, WorkloadRef(r.workload, ns, labels))))
    return sorted(out, key=lambda e: (e.node_id, e.endpoint.ip))


def device_chains(
    policies: Sequence[NetworkPolicy], cluster: Sequence[PlacedEndpoint], node_id: str
) -> list[Chain]:
    """The chains of ``node_id``'s table (the module's rules); empty: no table."""
    isolated = {p.namespace for p in policies if p.ingress}
    mine = [e.endpoint for e in cluster if e.node_id == node_id]
    local = [e for e in mine if e.workload.namespace in isolated]
    everyone = [e.endpoint for e in cluster]
    chains = []
    if local:
        compiled = compile_rules(policies, everyone, local)
        chains += [
            Chain(w, tuple(sorted(e.ip for e in local if e.workload == w)), tuple(lines))
            for w, lines in compiled.items()
        ]
    for w, lines in compile_egress(policies, everyone, mine).items():
        ips = tuple(sorted(e.ip for e in mine if e.workload == w))
        chains.append(Chain(w, ips, tuple(lines), egress=True))
    return chains


def chains_to_pb(chains: Sequence[Chain]) -> list[pb.NetworkPolicyChain]:
    return [
        pb.NetworkPolicyChain(
            namespace=c.workload.namespace,
            workload=c.workload.name,
            addresses=list(c.addresses),
            egress=c.egress,
            lines=[
                pb.NetworkPolicyLine(
                    any_source=m.sources is None,
                    sources=list(m.sources or ()),
                    protocol=m.protocol or "",
                    ports=list(m.ports),
                    verdict=m.verdict,
                    comment=m.comment,
                )
                for m in c.lines
            ],
        )
        for c in chains
    ]


def chains_from_pb(msgs: Sequence[pb.NetworkPolicyChain]) -> tuple[Chain, ...]:
    """The chains, or ``NetworkConfigError`` naming the field that would not render."""
    out = []
    for i, c in enumerate(msgs):
        at = f"network.policy_chains[{i}]"
        for ip in (
            c.addresses if c.egress else (*c.addresses, *(s for ln in c.lines for s in ln.sources))
        ):
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise NetworkConfigError(f"{at}: {ip!r} is not an IPv4 address") from None
        if c.egress:
            for j, ln in enumerate(c.lines):
                try:
                    nets = [ipaddress.IPv4Network(x) for x in ln.sources]
                except ValueError as e:
                    raise NetworkConfigError(f"{at}.lines[{j}].sources: {e}") from None
                if len(list(ipaddress.collapse_addresses(nets))) != len(nets):
                    raise NetworkConfigError(f"{at}.lines[{j}].sources: overlapping networks")
        lines = []
        for j, ln in enumerate(c.lines):
            if ln.verdict not in ("accept", "drop"):
                raise NetworkConfigError(f"{at}.lines[{j}].verdict: {ln.verdict!r}")
            if ln.protocol not in ("", "tcp", "udp") or (ln.protocol and not ln.ports):
                raise NetworkConfigError(f"{at}.lines[{j}].protocol: {ln.protocol!r}")
            if not ln.any_source and not ln.sources:
                raise NetworkConfigError(f"{at}.lines[{j}].sources: empty")
            lines.append(
                Match(
                    None if ln.any_source else tuple(ln.sources),
                    ln.protocol or None,
                    tuple(ln.ports),
                    ln.verdict,
                    ln.comment.replace('"', "'"),
                )
            )
        if not lines or lines[-1].sources is not None or lines[-1].protocol is not None:
            raise NetworkConfigError(f"{at}.lines: must end with an unconditional line")
        out.append(
            Chain(
                WorkloadRef(c.workload, c.namespace, {}),
                tuple(c.addresses),
                tuple(lines),
                egress=c.egress,
            )
        )
    return tuple(out)


def render_inputs(
    chains: Sequence[Chain],
) -> tuple[dict[WorkloadRef, list[Match]], list[Endpoint], dict[WorkloadRef, list[Match]]]:
    """The arguments of ``netpolicy_nft.render_compiled`` for these chains: the ingress
    lines, the local endpoints, the egress lines."""
    compiled = {c.workload: list(c.lines) for c in chains if not c.egress}
    egress = {c.workload: list(c.lines) for c in chains if c.egress}
    local = list(dict.fromkeys(Endpoint(ip, c.workload) for c in chains for ip in c.addresses))
    return compiled, local, egress
