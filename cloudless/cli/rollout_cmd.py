"""``cloudless rollout status|history|undo NAME``: follow and reverse spec changes."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, now

rollout_app = typer.Typer(no_args_is_help=True, help="Roll-outs: status, history, undo.")

HISTORY_HEADERS = ["VERSION", "IMAGE", "REPLACED", "CAUSE"]


@rollout_app.command("status")
def status(
    name: Annotated[str, typer.Argument(help="A workload name.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Where the roll-out of the current version stands, and why if it failed."""
    doc = connect(config).call("GET", f"/v1/workloads/{name}/rollout")
    if output is not Format.TABLE:
        print_document(doc, output)
        return
    ro, reps = doc["rollout"], doc["replicas"]
    line = (
        f"{doc['workload']} version {doc['version']} ({doc['image']}): {ro['state']}; "
        f"{reps['updated']}/{reps['wanted']} updated, {reps['ready']} ready"
    )
    out.print(line, markup=False, highlight=False)
    if ro.get("reason"):
        out.print(f"reason: {ro['reason']}", markup=False, highlight=False)
    if doc.get("cause") and doc["cause"] != "applied":
        out.print(f"current because: {doc['cause']}", markup=False, highlight=False)


@rollout_app.command("history")
def history(
    name: Annotated[str, typer.Argument(help="A workload name.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """The earlier versions kept (at most 10) and why each was replaced."""
    doc = connect(config).call("GET", f"/v1/workloads/{name}/rollout")
    if output is not Format.TABLE:
        print_document({"history": doc["history"], "current": doc["version"]}, output)
        return
    t = now()
    rows = [
        [str(h["version"]), h["image"], fmt.age(t, h["replaced_at"]) + " ago", h["cause"]]
        for h in doc["history"]
    ]
    rows.append([str(doc["version"]), doc["image"], "current", doc["cause"]])
    print_table(HISTORY_HEADERS, rows, what="versions")


@rollout_app.command("undo")
def undo(
    name: Annotated[str, typer.Argument(help="A workload name.")],
    to_version: Annotated[
        int | None, typer.Option("--to-version", help="Default: the previous version.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Make an earlier version's spec current again (as a new version that rolls out)."""
    body = {} if to_version is None else {"to_version": to_version}
    res = connect(config).call("POST", f"/v1/workloads/{name}/undo", body)
    note(f"{name}: version {res['from']} is back, as version {res['version']}")


def register(app: typer.Typer) -> None:
    app.add_typer(rollout_app, name="rollout", rich_help_panel="Workloads")
