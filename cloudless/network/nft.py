"""The nftables ruleset of one device, rendered from the service table.

Contract of the rendered document (one ``nft -f`` transaction):

* It replaces table ``ip <table>`` atomically: ``table ...`` (creates it if absent), ``delete
  table ...``, then the full definition, all in one transaction, so a packet sees either the
  old rules or the new ones, never a half-built table. Nothing outside the table is touched.
* ``prerouting`` (container clients) and ``output`` (processes on the device) look up
  ``VIP . protocol . port`` in the ``services`` verdict map and jump to that port's chain,
  which picks an endpoint with ``numgen random mod N`` (or ``jhash ip saddr mod N`` for
  ``source-hash``) through a verdict map and DNATs to ``endpoint:port`` in the endpoint's chain.
* A VIP port without endpoints is in ``no_endpoints`` and gets a TCP reset / ICMP
  port-unreachable from the filter chains (a fast "connection refused", not a timeout).
* Unless ``isolate`` is off, table ``bridge <table>`` drops frames the bridge would forward
  from one container of the device straight to another: containers on one device reach each
  other only through a VIP or a published port.
* ``postrouting`` masquerades (a) DNATed traffic whose source and destination are both in this
  device's container subnet (hairpin: the reply would otherwise bypass the NAT on the bridge),
  and (b) container traffic to destinations outside every cluster range. Cluster traffic keeps
  its source address.

``stale_conntrack`` lists the conntrack deletions for endpoints that went away.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cloudless.network.addressing import IPv4Net
from cloudless.network.services import Service

TABLE = "cloudless"
DNAT_MARK = 0x10000000  # set on DNATed packets for the bridge table's isolation rule
_PICKERS = {"random": "numgen random mod", "source-hash": "jhash ip saddr mod"}
_REFUSE = (
    "\t\tmeta l4proto tcp ip daddr . meta l4proto . th dport @no_endpoints reject with tcp reset",
    "\t\tip daddr . meta l4proto . th dport @no_endpoints reject",
)


@dataclass(frozen=True)
class NftContext:
    """What the ruleset needs to know about the device and the cluster."""

    local_subnet: IPv4Net
    container_cidr: IPv4Net
    cluster_ranges: tuple[IPv4Net, ...]
    table: str = TABLE
    isolate: bool = True  # containers on this bridge cannot reach each other directly


def _chain_names(i: int, j: int) -> str:
    return f"svc{i}_p{j}"


def render(ctx: NftContext, services: Sequence[Service]) -> str:
    """The whole table as one ``nft -f`` document (see the module contract)."""
    ordered = sorted(services, key=lambda s: s.key)
    svc_elems: list[str] = []
    empty_elems: list[str] = []
    chains: list[str] = []
    for i, svc in enumerate(ordered):
        for j, port in enumerate(sorted(svc.spec.ports)):
            match = f"{svc.vip} . {port.protocol} . {port.port}"
            if not svc.endpoints:
                empty_elems.append(match)
                continue
            name = _chain_names(i, j)
            svc_elems.append(f"{match} : goto {name}")
            n = len(svc.endpoints)
            picker = (
                "jhash ip saddr mod" if svc.spec.balance == "source-hash" else "numgen random mod"
            )
            arms = ", ".join(f"{k} : goto {name}_e{k}" for k in range(n))
            chains.append(
                f"\tchain {name} {{\n"
                f'\t\tcomment "{svc.key} {port.protocol}/{port.port} -> {n} endpoints"\n'
                f"\t\t{picker} {n} vmap {{ {arms} }}\n\t}}"
            )
            for k, ep in enumerate(svc.endpoints):
                chains.append(
                    f"\tchain {name}_e{k} {{\n"
                    f'\t\tcomment "{ep.replica}"\n'
                    f"\t\tmeta l4proto {port.protocol} dnat to {ep.ip}:{port.port}\n\t}}"
                )
    t = ctx.table
    cluster = ", ".join(str(n) for n in ctx.cluster_ranges)
    out = [
        f"table ip {t}",
        f"delete table ip {t}",
        f"table ip {t} {{",
        "\tmap services {",
        "\t\ttype ipv4_addr . inet_proto . inet_service : verdict",
        *([f"\t\telements = {{ {', '.join(svc_elems)} }}"] if svc_elems else []),
        "\t}",
        "\tset no_endpoints {",
        "\t\ttype ipv4_addr . inet_proto . inet_service",
        *([f"\t\telements = {{ {', '.join(empty_elems)} }}"] if empty_elems else []),
        "\t}",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        "\t\tip daddr . meta l4proto . th dport vmap @services",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        "\t\tip daddr . meta l4proto . th dport vmap @services",
        "\t}",
        "\tchain mark_dnat {",
        "\t\ttype filter hook prerouting priority -90; policy accept;",
        f"\t\tct status dnat meta mark set meta mark | {DNAT_MARK:#x}",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tct status dnat ip saddr {ctx.local_subnet} ip daddr {ctx.local_subnet} masquerade",
        f"\t\tip saddr {ctx.container_cidr} ip daddr != {{ {cluster} }} masquerade",
        "\t}",
        "\tchain refuse_forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *_REFUSE,
        "\t}",
        "\tchain refuse_output {",
        "\t\ttype filter hook output priority filter; policy accept;",
        *_REFUSE,
        "\t}",
        *chains,
        "}",
        f"table bridge {t}",
        f"delete table bridge {t}",
        *(_isolation(t, ctx.local_subnet) if ctx.isolate else []),
        "",
    ]
    return "\n".join(out)


def _isolation(table: str, subnet: IPv4Net) -> list[str]:
    """Frames the bridge forwards from one container straight to another are dropped, unless
    they were DNATed (to a VIP or a published port: ``mark_dnat`` marks them). With
    br_netfilter loaded the IP hooks DNAT bridged frames and the bridge then forwards them
    straight to the backend; the bridge family here cannot read conntrack itself."""
    return [
        f"table bridge {table} {{",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f"\t\tmeta mark & {DNAT_MARK:#x} == {DNAT_MARK:#x} accept",
        f"\t\tip saddr {subnet} ip daddr {subnet} drop",
        "\t}",
        "}",
    ]


def delete_document(table: str = TABLE) -> str:
    """An ``nft -f`` document that removes the tables if present (and only them)."""
    return (
        f"table ip {table}\ndelete table ip {table}\n"
        f"table bridge {table}\ndelete table bridge {table}\n"
    )


def stale_conntrack(before: Iterable[Service], after: Iterable[Service]) -> list[list[str]]:
    """``conntrack -D`` argv for every (VIP port, endpoint) pair in ``before`` not in ``after``.

    Entries for a gone endpoint would keep steering a flow (UDP above all) at an address that no
    longer answers."""

    def pairs(svcs: Iterable[Service]) -> set[tuple[str, str, int, str]]:
        return {
            (str(s.vip), p.protocol, p.port, str(e.ip))
            for s in svcs
            for p in s.spec.ports
            for e in s.endpoints
        }

    gone = sorted(pairs(before) - pairs(after))
    return [
        [
            *("conntrack", "-D", "-p", proto, "--orig-dst", vip),
            *("--orig-port-dst", str(port), "--reply-src", ep),
        ]
        for vip, proto, port, ep in gone
    ]
