"""The nftables ruleset of one device, rendered from the service table.

Contract of the rendered document (one ``nft -f`` transaction):

* It replaces table ``ip <table>`` atomically: ``table ...`` (creates it if absent), ``delete
  table ...``, then the full definition, all in one transaction, so a packet sees either the
  old rules or the new ones, never a half-built table. Nothing outside the table is touched.
* ``prerouting`` (container clients) and ``output`` (processes on the device) look up
  ``VIP . protocol . port`` in the ``services`` verdict map and jump to the service's chain
  (``vip_<a>_<b>_<c>_<d>``, named after its VIP), whose one rule DNATs to an endpoint picked
  per connection with ``numgen random mod N`` (or ``jhash ip saddr mod N`` for
  ``source-hash``) through an anonymous map; the port is kept (endpoints listen on the
  service's ports). A ``local-first`` service picks among the endpoints in this device's
  container subnet when it has any, else among all.
* A VIP port without endpoints is in ``no_endpoints`` and gets a TCP reset / ICMP
  port-unreachable from the filter chains (a fast "connection refused", not a timeout).
* Unless ``isolate`` is off, table ``bridge <table>`` drops frames the bridge would forward
  from one container of the device straight to another: containers on one device reach each
  other only through a VIP or a published port.
* ``postrouting`` masquerades (a) DNATed traffic whose source and destination are both in this
  device's container subnet (hairpin: the reply would otherwise bypass the NAT on the bridge),
  and (b) container traffic to destinations outside every cluster range. Cluster traffic keeps
  its source address.

``render_delta(ctx, before, after)`` is the same change as a transaction that touches only
the services that changed (their map elements and their chain), for a table known to hold
``render(ctx, before)``. ``stale_conntrack`` lists the conntrack deletions for endpoints that
went away.
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


def chain_name(vip: object) -> str:
    """The chain of a service: named after its VIP, which is stable for the service's life
    and unique, so a change to one service addresses one chain."""
    return "vip_" + str(vip).replace(".", "_")


def by_vip(services: Iterable[Service]) -> dict[str, Service]:
    """The services that get rules, by VIP. Two services claiming one VIP (refused upstream)
    would collide: the first by key keeps it and the other gets no rules."""
    out: dict[str, Service] = {}
    for svc in sorted(services, key=lambda s: s.key):
        out.setdefault(str(svc.vip), svc)
    return out


def _dnat(svc: Service, ctx: NftContext) -> str:
    """The rule of a service's chain: DNAT to one endpoint (same port: endpoints listen on the
    service's ports), picked per connection by ``numgen``/``jhash`` through an anonymous map."""
    eps = svc.endpoints
    if svc.spec.balance == "local-first":
        eps = tuple(ep for ep in eps if ep.ip in ctx.local_subnet) or eps
    if len(eps) == 1:
        target = str(eps[0].ip)
    else:
        arms = ", ".join(f"{k} : {ep.ip}" for k, ep in enumerate(eps))
        target = f"{_PICKERS.get(svc.spec.balance, _PICKERS['random'])} {len(eps)} map {{ {arms} }}"
    return f'dnat to {target} comment "{svc.key}"'


def _keys(svc: Service) -> list[str]:
    return [f"{svc.vip} . {p.protocol} . {p.port}" for p in sorted(svc.spec.ports)]


@dataclass(frozen=True)
class _Rendered:
    """One service's share of the table: ``services`` map keys (or ``no_endpoints`` keys when
    it has none) and the rule of its chain."""

    mapped: frozenset[str]
    empty: frozenset[str]
    rule: str | None

    @classmethod
    def of(cls, svc: Service | None, ctx: NftContext) -> _Rendered:
        if svc is None:
            return cls(frozenset(), frozenset(), None)
        keys = frozenset(_keys(svc))
        if not svc.endpoints:
            return cls(frozenset(), keys, None)
        return cls(keys, frozenset(), _dnat(svc, ctx))


def render(ctx: NftContext, services: Sequence[Service]) -> str:
    """The whole table as one ``nft -f`` document (see the module contract)."""
    svc_elems: list[str] = []
    empty_elems: list[str] = []
    chains: list[str] = []
    for vip, svc in sorted(by_vip(services).items(), key=lambda kv: _ip_order(kv[0])):
        if not svc.endpoints:
            empty_elems += _keys(svc)
            continue
        name = chain_name(vip)
        svc_elems += [f"{k} : goto {name}" for k in _keys(svc)]
        chains.append(f"\tchain {name} {{\n\t\t{_dnat(svc, ctx)}\n\t}}")
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


def _ip_order(ip: str) -> tuple[int, ...]:
    return tuple(int(x) for x in ip.split("."))


def render_delta(ctx: NftContext, before: Sequence[Service], after: Sequence[Service]) -> str:
    """The commands that turn the table rendered for ``before`` into the one rendered for
    ``after``, as one ``nft -f`` transaction touching only the services that changed ("" when
    none did). Packets see the old rules or the new ones, never a mix: nft commits the whole
    document or nothing. Applying it to a table that is not ``render(ctx, before)`` may be
    refused (a missing element or chain); the caller then replaces the whole table."""
    t = ctx.table
    old, new = by_vip(before), by_vip(after)
    del_mapped: list[str] = []
    del_empty: list[str] = []
    del_chains: list[str] = []
    add_chains: list[str] = []
    rules: list[str] = []
    add_mapped: list[str] = []
    add_empty: list[str] = []
    for vip in sorted(set(old) | set(new), key=_ip_order):
        if old.get(vip) == new.get(vip):  # the same service renders the same
            continue
        a, b = _Rendered.of(old.get(vip), ctx), _Rendered.of(new.get(vip), ctx)
        if a == b:
            continue
        name = chain_name(vip)
        del_mapped += sorted(a.mapped - b.mapped)
        del_empty += sorted(a.empty - b.empty)
        add_mapped += [f"{k} : goto {name}" for k in sorted(b.mapped - a.mapped)]
        add_empty += sorted(b.empty - a.empty)
        if a.rule is not None and b.rule is None:
            del_chains.append(f"delete chain ip {t} {name}")
        elif b.rule is not None and a.rule != b.rule:
            if a.rule is None:
                add_chains.append(f"add chain ip {t} {name}")
            else:
                rules.append(f"flush chain ip {t} {name}")
            rules.append(f"add rule ip {t} {name} {b.rule}")

    def elements(verb: str, into: str, elems: list[str]) -> list[str]:
        return [f"{verb} element ip {t} {into} {{ {', '.join(elems)} }}"] if elems else []

    out = [
        *elements("delete", "services", del_mapped),
        *elements("delete", "no_endpoints", del_empty),
        *del_chains,
        *add_chains,
        *rules,
        *elements("add", "services", add_mapped),
        *elements("add", "no_endpoints", add_empty),
    ]
    return "\n".join(out) + "\n" if out else ""


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
    """``conntrack -D`` argv for the flows of every (VIP port, endpoint) pair in ``before`` not
    in ``after``: one per (VIP, endpoint) when the endpoint left the service on every port, else
    one per port it left.

    Entries for a gone endpoint would keep steering a flow (UDP above all) at an address that no
    longer answers."""

    def pairs(svcs: Iterable[Service]) -> set[tuple[str, str, int, str]]:
        return {
            (str(s.vip), p.protocol, p.port, str(e.ip))
            for s in svcs
            for p in s.spec.ports
            for e in s.endpoints
        }

    before, after = list(before), list(after)
    old, new = {s.key: s for s in before}, {s.key: s for s in after}
    # an unchanged service loses no endpoint (compared by key: equality, no hashing)
    was = pairs(s for s in before if new.get(s.key) != s)
    now = pairs(s for s in after if old.get(s.key) != s)
    gone = was - now
    left_entirely = {(v, e) for v, _, _, e in gone} - {(v, e) for v, _, _, e in now}
    out: list[list[str]] = [
        ["conntrack", "-D", "--orig-dst", vip, "--reply-src", ep]
        for vip, ep in sorted(left_entirely, key=lambda ve: (_ip_order(ve[0]), _ip_order(ve[1])))
    ]
    for vip, proto, port, ep in sorted(gone):
        if (vip, ep) not in left_entirely:
            out.append(
                [
                    *("conntrack", "-D", "-p", proto, "--orig-dst", vip),
                    *("--orig-port-dst", str(port), "--reply-src", ep),
                ]
            )
    return out
