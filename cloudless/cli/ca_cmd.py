"""``cloudless ca status`` and ``cloudless remove coordinator NAME``.

(``cloudless coordinator`` runs the coordinator process, so removing one is spelled like
removing a node: ``cloudless remove coordinator NAME``.)
"""

from __future__ import annotations

from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.actions import remove_app
from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect

ca_app = typer.Typer(no_args_is_help=True, help="The cluster's certificate authority.")


@ca_app.command("status")
def status(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Trusted roots, the root-rotation phase, and certificate expiries."""
    doc = connect(config).call("GET", "/v1/ca/status")
    if output is not Format.TABLE:
        print_document(doc, output)
        return
    rows = [
        [r["role"], r["digest"][:16], fmt.clock_time(r["not_after"]), f"{r['days_left']:.0f}d"]
        for r in doc["roots"]
    ]
    own = doc.get("coordinator")
    if own:
        left = f"{own['days_left']:.0f}d"
        rows.append(["this coordinator", own["spiffe_id"], fmt.clock_time(own["not_after"]), left])
    for u in doc["users"]:
        left = f"{u['days_left']:.0f}d" if u["not_after"] else "?"
        when = fmt.clock_time(u["not_after"]) if u["not_after"] else "?"
        rows.append([f"user ({u['role']})", u["name"], when, left])
    note(f"trust domain {doc['trust_domain']}; root rotation: {doc['rotation']}")
    print_table(["CERTIFICATE", "ID", "EXPIRES", "LEFT"], rows, what="certificates")


@remove_app.command("coordinator")
def remove_coordinator(
    name: Annotated[str, typer.Argument(help="Coordinator name.")], config: ConfigOpt = None
) -> None:
    """Remove a coordinator: its etcd member (never below quorum), registration, identity."""
    res = connect(config).call("DELETE", f"/v1/cluster/coordinators/{name}")
    extra = " and its etcd member" if res.get("etcd_member_removed") else ""
    out.print(f"coordinator {name}{extra} removed; its certificate is revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(ca_app, name="ca", rich_help_panel="Cluster")
