"""``cloudless netpolicy``: network policies (apply a file, get, delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect
from cloudless.lib.errors import CloudlessError

netpolicy_app = typer.Typer(
    no_args_is_help=True,
    help="Network policies: which workloads may connect to which, by namespace and labels.",
)


@netpolicy_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Policy in YAML or JSON.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Validate and store a policy (same name: replaced); devices are reprogrammed."""
    try:
        text = file.read_bytes()
    except OSError as e:
        raise CloudlessError(f"cannot read {file}: {e.strerror}") from None
    res = connect(config).call("POST", "/v1/netpolicies", raw=text, content_type="application/yaml")
    if output is not Format.TABLE:
        print_document(res, output)
        return
    p = res["netpolicy"]
    out.print(f"network policy {p['name']} applied (namespace {p['namespace']})")


def _peers(peers: list[dict[str, Any]]) -> str:
    parts = []
    for peer in peers:
        if "cidr" in peer:
            parts.append(str(peer["cidr"]))
            continue
        sel = ",".join(f"{k}={v}" for k, v in (peer.get("selector") or {}).items())
        parts.append(peer["namespace"] + (f"[{sel}]" if sel else ""))
    return " ".join(parts)


def _rules(p: dict[str, Any], direction: str) -> str:
    out_rules = []
    for r in p.get(direction) or []:
        ports = ",".join(f"{x['protocol']}/{x['port']}" for x in r.get("ports", [])) or "any"
        if direction == "ingress":
            out_rules.append(f"{r['action']} from {_peers(r['from'])} to {ports}")
        else:
            out_rules.append(f"{r['action']} to {_peers(r['to'])} {ports}")
    return "; ".join(out_rules) or "-"


@netpolicy_app.command("get")
def get(
    name: Annotated[str | None, typer.Argument(help="One policy (default: all).")] = None,
    namespace: Annotated[
        str | None, typer.Option("-n", "--namespace", help="Only this namespace.")
    ] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """The policies: namespace, selected workloads, ingress and egress rules."""
    client = connect(config)
    if name is not None:
        ps = [client.call("GET", f"/v1/netpolicies/{name}")["netpolicy"]]
        problems: list[str] = []
    else:
        path = "/v1/netpolicies" + (f"?namespace={namespace}" if namespace else "")
        res = client.call("GET", path)
        ps, problems = res["netpolicies"], res.get("problems", [])
    if output is not Format.TABLE:
        print_document({"netpolicies": ps} if name is None else ps[0], output)
        return
    rows = [
        [
            p["name"],
            p["namespace"],
            ",".join(f"{k}={v}" for k, v in (p.get("selector") or {}).items()) or "(all)",
            _rules(p, "ingress"),
            _rules(p, "egress"),
        ]
        for p in ps
    ]
    print_table(
        ["NAME", "NAMESPACE", "SELECTOR", "INGRESS", "EGRESS"], rows, what="network policies"
    )
    for pr in problems:
        note(pr)


@netpolicy_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Policy name.")], config: ConfigOpt = None
) -> None:
    """Delete a policy; devices are reprogrammed (none left in a namespace: it is open)."""
    connect(config).call("DELETE", f"/v1/netpolicies/{name}")
    out.print(f"network policy {name} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(netpolicy_app, name="netpolicy", rich_help_panel="Access")
