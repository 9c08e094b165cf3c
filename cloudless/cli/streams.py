"""Streaming commands: ``cloudless logs`` and ``cloudless events``."""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from cloudless.cli import fmt
from cloudless.cli.client import ApiError, Client
from cloudless.cli.output import Format, note, out
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, find_node, pick_replica
from cloudless.lib.errors import CloudlessError


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
    tail: Annotated[
        int, typer.Option(help="Start with the last N events (at most 1000).", min=0, max=1000)
    ] = 20,
    workload: Annotated[
        str | None, typer.Option("--workload", "-w", help="Only about this workload.")
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", "-n", help="Only about this node (id/name).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="Only of this kind (node, workload...).")
    ] = None,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Cluster events, one line each: time, kind, message. With -f, keeps streaming and
    picks up where it left off after a lost connection."""
    if workload and node:
        raise typer.BadParameter("pass --node or --workload, not both", param_hint="--node")
    client = connect(config)
    filters: dict[str, str] = {"kind": kind} if kind else {}
    if node:
        filters["object"] = "node/" + str(find_node(client.nodes(), node)["id"])
    elif workload:
        filters["object"] = "workload/" + workload

    def show(e: dict[str, Any]) -> None:
        out.print(json.dumps(e) if output is not Format.TABLE else fmt.event_line(e))

    after = print_events(client, filters, tail, show)
    if follow:
        follow_events(client, filters, after, show)


CONTINUE_HEADER = "cloudless-continue"  # cloudless.coordinator.eventlog.query.CONTINUE_HEADER


def print_events(
    client: Client, filters: dict[str, str], tail: int, show: Callable[[dict[str, Any]], None]
) -> str:
    """Show the newest ``tail`` matching events; returns the position to follow on from."""
    headers: dict[str, str] = {}
    lines = list(client.stream("/v1/events?" + urlencode({**filters, "tail": tail}), headers))
    for line in lines:
        if line.strip():
            show(json.loads(line))
    found = {k.lower(): v for k, v in headers.items()}.get(CONTINUE_HEADER, "")
    if not found[:1].isdigit():
        raise CloudlessError(
            "the coordinator did not say where its events end (no Cloudless-Continue header): "
            "is it older than this client?"
        )
    return found


def follow_events(
    client: Client,
    filters: dict[str, str],
    after: str,
    show: Callable[[dict[str, Any]], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int | None = None,
) -> str:
    """Show every matching event after position ``after`` (a ``Cloudless-Continue`` token),
    as it is written. A lost connection (or a coordinator that is restarting) is retried from
    the last event shown (its ``revision:id``), so nothing is shown twice or skipped, even
    when the cut falls between two events one transaction wrote. Returns (only when
    ``attempts`` connections have ended) the position of the last event shown."""
    pause, tries = 0.2, 0
    while attempts is None or tries < attempts:
        tries += 1
        query = urlencode({**filters, "continue": after, "follow": 1})
        try:
            for line in client.stream("/v1/events?" + query):
                if line.strip():
                    e = json.loads(line)
                    show(e)
                    after = f"{int(e['revision'])}:{e['id']}"
                    pause = 0.2
        except ApiError as e:
            if e.status < 500:
                raise
            note(f"events: {e}; reconnecting")
        except (OSError, http.client.HTTPException, CloudlessError, ValueError) as e:
            note(f"events: connection lost ({e}); reconnecting")
        sleep(pause)
        pause = min(pause * 2, 5.0)
    return after


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
