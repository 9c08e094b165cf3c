"""Network policies compiled to one device's nftables table (pure).

``compile_rules`` turns the policies and the cluster's workload endpoints into, for every
workload with a replica on this device, an ordered list of ``Match`` lines (source addresses,
protocol and ports, verdict): the deny rules, then the allow rules of the policies selecting
it, then "same namespace: accept", then "drop" — the order ``netpolicy.decide`` applies, so
``evaluate`` over the lines answers as ``decide`` does (a property the unit tests check).
``render`` writes them as one ``nft -f`` document for table ``inet <table>``:

* it replaces the table atomically (``table``, ``delete table``, the definition, in one
  transaction) and touches nothing else;
* the ``forward`` hook (priority filter) accepts established and related packets; sends a
  packet *from* a local egress-limited workload through that workload's egress chain (the
  verdict map ``by_source``: ``jump``; its lines match destinations, an allowed packet
  returns, the rest is dropped); then sends a packet *from the container range* to a local
  workload's address through that workload's ingress chain (``by_destination``). Traffic
  from outside the container range (the device itself, clients of published ports) is not
  policed by ingress chains; traffic a container sends to the device itself (its DNS
  responder) is not forwarded and not policed by egress chains.
* two containers bridged on one device reach the forward hook only when the bridge hands
  its IPv4 frames to netfilter: the agent turns that on for its bridge (``nf_call_iptables``)
  while a policy table is programmed.

``compile_egress`` gives each local egress-limited workload its lines (deny rules, allow
rules, drop), destinations resolved to workload addresses and rule networks, merged so that
no set holds overlapping ranges (nft refuses those).

Sources are matched by address: a policy naming labels matches the addresses of the
replicas that carry them *now*, so the table is re-rendered when replicas come and go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cloudless.network.netpolicy import NetworkPolicy, Peer, WorkloadRef

TABLE = "cloudless_policy"


@dataclass(frozen=True)
class Endpoint:
    ip: str
    workload: WorkloadRef


@dataclass(frozen=True)
class Match:
    sources: tuple[str, ...] | None  # None: any source
    protocol: str | None  # None: any protocol (ports then empty)
    ports: tuple[int, ...]
    verdict: str  # "accept" or "drop"
    comment: str


def compile_rules(
    policies: Iterable[NetworkPolicy], cluster: Sequence[Endpoint], local: Sequence[Endpoint]
) -> dict[WorkloadRef, list[Match]]:
    """Per local destination workload, its ordered match lines (see the module)."""
    pols = sorted(policies, key=lambda p: p.name)
    out: dict[WorkloadRef, list[Match]] = {}
    for dst in sorted({e.workload for e in local}, key=lambda w: (w.namespace, w.name)):
        lines: list[Match] = []
        applying = [p for p in pols if p.selects(dst)]
        for action, verdict in (("deny", "drop"), ("allow", "accept")):
            for p in applying:
                for i, rule in enumerate(p.ingress):
                    if rule.action != action:
                        continue
                    ips = _addresses(cluster, rule.sources)
                    if not ips:
                        continue
                    note = f"{p.name} ingress[{i}] {action}"
                    if not rule.ports:
                        lines.append(Match(ips, None, (), verdict, note))
                    for proto in ("tcp", "udp"):
                        ports = tuple(sorted(r.port for r in rule.ports if r.protocol == proto))
                        if ports:
                            lines.append(Match(ips, proto, ports, verdict, note))
        same = tuple(sorted({e.ip for e in cluster if e.workload.namespace == dst.namespace}))
        if same:
            lines.append(Match(same, None, (), "accept", f"same namespace {dst.namespace}"))
        lines.append(Match(None, None, (), "drop", "other namespaces: denied by default"))
        out[dst] = lines
    return out


def compile_egress(
    policies: Iterable[NetworkPolicy], cluster: Sequence[Endpoint], local: Sequence[Endpoint]
) -> dict[WorkloadRef, list[Match]]:
    """Per local egress-limited workload, its ordered destination lines (see the module)."""
    pols = sorted((p for p in policies if p.egress), key=lambda p: p.name)
    out: dict[WorkloadRef, list[Match]] = {}
    for src in sorted({e.workload for e in local}, key=lambda w: (w.namespace, w.name)):
        limiting = [p for p in pols if p.selects(src)]
        if not limiting:
            continue
        lines: list[Match] = []
        for action, verdict in (("deny", "drop"), ("allow", "accept")):
            for p in limiting:
                for i, rule in enumerate(p.egress):
                    if rule.action != action:
                        continue
                    dsts = merged([*_addresses(cluster, rule.sources), *rule.blocks])
                    if not dsts:
                        continue
                    note = f"{p.name} egress[{i}] {action}"
                    if not rule.ports:
                        lines.append(Match(dsts, None, (), verdict, note))
                    for proto in ("tcp", "udp"):
                        ports = tuple(sorted(r.port for r in rule.ports if r.protocol == proto))
                        if ports:
                            lines.append(Match(dsts, proto, ports, verdict, note))
        lines.append(Match(None, None, (), "drop", "egress: nothing allows it"))
        out[src] = lines
    return out


def merged(items: Iterable[str]) -> tuple[str, ...]:
    """Addresses and networks as the fewest non-overlapping ones (a lone address stays an
    address): what an nft set accepts."""
    nets = ipaddress.collapse_addresses(ipaddress.IPv4Network(i) for i in items)
    return tuple(str(n.network_address) if n.prefixlen == 32 else str(n) for n in nets)


def _addresses(cluster: Sequence[Endpoint], peers: Sequence[Peer]) -> tuple[str, ...]:
    return tuple(sorted({e.ip for e in cluster if any(p.matches(e.workload) for p in peers)}))


def evaluate(lines: Sequence[Match], src_ip: str, protocol: str, port: int) -> Match:
    """The first line a packet from ``src_ip`` to ``protocol``/``port`` matches (for an egress
    chain: ``src_ip`` is the destination; lines may name networks)."""
    for m in lines:
        if m.sources is not None and not _within(src_ip, m.sources):
            continue
        if m.protocol is not None and (m.protocol != protocol or port not in m.ports):
            continue
        return m
    raise AssertionError("every chain ends with an unconditional line")


def _within(ip: str, items: Sequence[str]) -> bool:
    addr = ipaddress.IPv4Address(ip)
    return any(addr in ipaddress.IPv4Network(i) for i in items)


def _line(m: Match, *, egress: bool = False) -> str:
    parts = []
    if m.sources is not None:
        parts.append(f"ip {'daddr' if egress else 'saddr'} {{ {', '.join(m.sources)} }}")
    if m.protocol is not None:
        parts.append(f"meta l4proto {m.protocol} th dport {{ {', '.join(map(str, m.ports))} }}")
    # an allowed egress packet goes on to the destination's ingress chain
    parts.append("return" if egress and m.verdict == "accept" else m.verdict)
    parts.append(f'comment "{m.comment}"')
    return "\t\t" + " ".join(parts)


def render(
    policies: Iterable[NetworkPolicy],
    cluster: Sequence[Endpoint],
    local: Sequence[Endpoint],
    container_cidr: str,
    table: str = TABLE,
) -> str:
    """The device's policy table as one ``nft -f`` document (see the module contract)."""
    return render_compiled(
        compile_rules(policies, cluster, local),
        local,
        container_cidr,
        table,
        egress=compile_egress(policies, cluster, local),
    )


def render_compiled(
    compiled: Mapping[WorkloadRef, Sequence[Match]],
    local: Sequence[Endpoint],
    container_cidr: str,
    table: str = TABLE,
    *,
    egress: Mapping[WorkloadRef, Sequence[Match]] | None = None,
) -> str:
    """``render`` from lines already compiled (by the coordinator, sent to the agent);
    ``local`` holds the addresses of the workloads of ``compiled`` and of ``egress``."""
    egress = egress or {}
    index = {w: k for k, w in enumerate(compiled)}
    eindex = {w: k for k, w in enumerate(egress)}
    ordered = sorted(set(local), key=lambda e: tuple(int(x) for x in e.ip.split(".")))
    elems = [f"{e.ip} : goto to_{index[e.workload]}" for e in ordered if e.workload in index]
    eelems = [f"{e.ip} : jump from_{eindex[e.workload]}" for e in ordered if e.workload in eindex]
    out = [
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "\tmap by_destination {",
        "\t\ttype ipv4_addr : verdict",
    ]
    if elems:
        out.append(f"\t\telements = {{ {', '.join(elems)} }}")
    out += ["\t}", "\tmap by_source {", "\t\ttype ipv4_addr : verdict"]
    if eelems:
        out.append(f"\t\telements = {{ {', '.join(eelems)} }}")
    out += [
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        "\t\tct state established,related accept",
        "\t\tip saddr vmap @by_source",
        f"\t\tip saddr {container_cidr} ip daddr vmap @by_destination",
        "\t}",
    ]
    for w, lines in compiled.items():
        out.append(f"\tchain to_{index[w]} {{")
        out.append(f'\t\tcomment "{w.namespace}/{w.name}"')
        out += [_line(m) for m in lines]
        out.append("\t}")
    for w, lines in egress.items():
        out.append(f"\tchain from_{eindex[w]} {{")
        out.append(f'\t\tcomment "egress {w.namespace}/{w.name}"')
        out += [_line(m, egress=True) for m in lines]
        out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def delete_document(table: str = TABLE) -> str:
    """An ``nft -f`` document that removes the policy table if present (and only it)."""
    return f"table inet {table}\ndelete table inet {table}\n"
