"""Streaming commands: ``cloudless logs`` and ``cloudless events``."""

from __future__ import annotations

import json
import sys
from typing import Annotated
from urllib.parse import quote

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, note, out
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, find_node, pick_replica


def logs(
    replica: Annotated[
        str, typer.Argument(help="Replica id, a unique prefix of one, or a workload name.")
    ],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    tail: Annotated[
        int, typer.Option(help="Only the last N lines (0: everything kept).", min=0)
    ] = 0,
    config: ConfigOpt = None,
) -> None:
    """Print a replica's output (stdout and stderr), fetched from its node."""
    client = connect(config)
    replica, how = pick_replica(client.call("GET", "/v1/replicas")["replicas"], replica)
    if how:
        note(how)
    q = f"?tail={tail}" + ("&follow=1" if follow else "")
    sink = sys.stdout.buffer
    for chunk in client.stream(f"/v1/replicas/{quote(replica)}/logs{q}"):
        sink.write(chunk)
        sink.flush()


def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming.")] = False,
    tail: Annotated[int, typer.Option(help="Start with the last N events.", min=0)] = 20,
    workload: Annotated[
        str | None, typer.Option("--workload", "-w", help="Only about this workload.")
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", "-n", help="Only about this node (id/name).")
    ] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Cluster events, one line each: time, kind, message."""
    client = connect(config)
    node_id = str(find_node(client.nodes(), node)["id"]) if node else ""
    # Filtering happens here, so ask for more history than shown when filtering.
    want = tail if not (workload or node_id) else max(tail, 500)
    q = f"?tail={want}" + ("&follow=1" if follow else "")
    shown: list[str] = []
    for line in client.stream(f"/v1/events{q}"):
        if not line.strip():
            continue
        e = json.loads(line)
        if (workload or node_id) and not fmt.event_concerns(
            e, node=node_id, workload=workload or ""
        ):
            continue
        text = json.dumps(e) if output is not Format.TABLE else fmt.event_line(e)
        if follow:
            out.print(text)
        else:
            shown.append(text)
    for text in shown[-tail:] if tail else []:
        out.print(text)


def ui(
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the link in a browser.")
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Print a one-time login link (valid 60 s) to the web console, and open it."""
    client = connect(config)
    url = str(client.call("POST", "/v1/ui/login")["url"])
    typer.echo(url)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Workloads")(logs)
    app.command(rich_help_panel="Cluster state")(events)
    app.command(rich_help_panel="Cluster state")(ui)
