"""``cloudless describe service`` and ``cloudless net status``: the container network."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from cloudless.cli.output import Format, out, print_document, table
from cloudless.cli.resources import _fields, describe_app
from cloudless.cli.session import ConfigOpt, OutputOpt, connect

net_app = typer.Typer(no_args_is_help=True, help="The container network: plan, overlay, slots.")


@describe_app.command("service")
def describe_service(
    name: Annotated[str, typer.Argument(help="A service (a workload with ports).")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Its namespace.")] = "default",
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """A service: virtual IP, DNS names, ports, endpoints and why some replicas are not."""
    path = f"/v1/services/{quote(name, safe='')}?{urlencode({'namespace': namespace})}"
    s: dict[str, Any] = connect(config).call("GET", path)
    if output is not Format.TABLE:
        print_document(s, output)
        return
    out.print(
        _fields(
            [
                ("Service", f"{s['name']}.{s['namespace']}"),
                ("Virtual IP", str(s["vip"])),
                ("Names", ", ".join(s.get("names", []))),
                ("Ports", ", ".join(s.get("ports", []))),
                ("SRV", ", ".join(s.get("srv", []))),
                ("Endpoints", f"{s.get('ready', 0)} ready / {s.get('total', 0)} replicas"),
            ]
        )
    )
    eps = s.get("endpoints") or []
    if eps:
        rows = [[str(e["replica"]), str(e["ip"]), str(e.get("node_name", e["node"]))] for e in eps]
        out.print(table(["REPLICA", "ADDRESS", "NODE"], rows, title="Endpoints"))
    if s.get("not_ready"):
        out.print(f"Not ready: {s['not_ready']}")


@net_app.command("status")
def net_status(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """The address plan, the lighthouse and each node's overlay IP and container subnet."""
    v: dict[str, Any] = connect(config).call("GET", "/v1/network")
    if output is not Format.TABLE:
        print_document(v, output)
        return
    if not v.get("enabled"):
        out.print(f"Container networking is off: {v.get('reason', '')}")
        return
    from cloudless.network.views import NET_HEADERS, net_rows

    lh = v.get("lighthouse")
    out.print(
        _fields(
            [
                ("Overlay", str(v["overlay"])),
                ("Containers", str(v["containers"])),
                ("Services", str(v["services"])),
                ("Slots", f"{v['slots']['used']} used of {v['slots']['total']}"),
                (
                    "Lighthouse",
                    f"{lh['overlay_ip']} at {lh['address']} (relay for nodes behind NAT)"
                    if lh
                    else "none (set --network lighthouse=IP:PORT): no overlay between nodes",
                ),
            ]
        )
    )
    out.print(table(NET_HEADERS, net_rows(v), title="Nodes"))


def register(app: typer.Typer) -> None:
    app.add_typer(net_app, name="net", rich_help_panel="Cluster state")
