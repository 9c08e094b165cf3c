"""The service table as rendered before the per-VIP chains (one chain per VIP port, one per
endpoint, the ``svc<i>_p<j>`` names by position), kept only so the benchmark can load it side
by side with ``cloudless.network.nft.render`` in one run. Not used by the product."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cloudless.network.nft import _REFUSE, DNAT_MARK, NftContext, _isolation
from cloudless.network.services import Service


def _chain_names(i: int, j: int) -> str:
    return f"svc{i}_p{j}"


def render_legacy(ctx: NftContext, services: Sequence[Service]) -> str:
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


def stale_conntrack_legacy(before: Iterable[Service], after: Iterable[Service]) -> list[list[str]]:
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
