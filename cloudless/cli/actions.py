"""Commands that change the cluster: apply, delete, scale, node operations, wait, explain."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cloudless.cli import fmt
from cloudless.cli.client import ApiError, Client
from cloudless.cli.output import (
    Format,
    err,
    note,
    out,
    print_document,
    print_error,
    print_table,
)
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, node_names, resolve_node_id
from cloudless.lib.errors import CloudlessError, ValidationError

FileOpt = Annotated[
    str,
    typer.Option(
        "--filename", "-f", help="Workload spec (YAML or JSON), a directory of them, or - (stdin)."
    ),
]


def read_spec(path: str) -> bytes:
    """The bytes of ``path`` (``-`` is stdin); a missing file names the path."""
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path).expanduser()
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise CloudlessError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CloudlessError(f"{path}: is a directory; pass a YAML or JSON file") from None


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def read_specs(path: str) -> list[tuple[str, bytes]]:
    """``(source, body)`` per workload in ``path``: a file (several YAML documents allowed),
    ``-`` for stdin, or a directory (its .yaml/.yml/.json files, by name, not recursive).
    ``source`` is ``file`` or ``file#2`` for the second document of a file."""
    p = Path(path).expanduser()
    if path != "-" and p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in SPEC_SUFFIXES and f.is_file())
        if not files:
            raise CloudlessError(f"{path}: no .yaml, .yml or .json files in this directory")
        return [item for f in files for item in read_specs(str(f))]
    name = "stdin" if path == "-" else path
    bodies = split_documents(read_spec(path))
    if len(bodies) == 1:
        return [(name, bodies[0])]
    return [(f"{name}#{i}", b) for i, b in enumerate(bodies, 1)]


def split_documents(data: bytes) -> list[bytes]:
    """One request body per YAML document (``---`` separated); a single document, or text
    that does not parse, is sent as is so the server reports the error with its field path."""
    try:
        docs = [d for d in yaml.safe_load_all(data) if d is not None]
    except yaml.YAMLError:
        return [data]
    if len(docs) <= 1:
        return [data]
    return [json.dumps(d).encode() for d in docs]


def duration_option(text: str, flag: str = "--timeout") -> float:
    try:
        return fmt.parse_duration(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=flag) from None


def running_count(w: dict[str, Any]) -> int:
    return sum(1 for r in w.get("replicas") or [] if r.get("observed") == "running")


def wait_running(client: Client, name: str, want: int | None, timeout: float) -> dict[str, Any]:
    """Poll until ``want`` replicas of ``name`` run (None: as many as it wants), with a
    spinner on stderr. Timing out is a CloudlessError that says how far it got and why."""
    deadline = time.monotonic() + timeout
    with err.status(f"waiting for {name}") as status:
        while True:
            w = client.workload(name)
            target = int(w["replicas_wanted"]) if want is None else want
            running = running_count(w)
            status.update(f"waiting for {name}: {running}/{target} running")
            if running >= target:
                return w
            if time.monotonic() > deadline:
                why = f"; {w['unplaced']} unplaced: {w['unplaced_reason']}" if w["unplaced"] else ""
                raise CloudlessError(
                    f"timed out after {fmt.human_duration(timeout)}: {name} has "
                    f"{running}/{target} replicas running{why} "
                    f"(see `cloudless describe workload {name}`)"
                )
            time.sleep(0.25)


def apply(
    filename: FileOpt,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every replica runs.")] = False,
    timeout: Annotated[str, typer.Option(help="How long to --wait: 90s, 5m.")] = "2m",
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Create or update workloads from a file (several YAML documents allowed), a directory
    of spec files, or stdin."""
    seconds = duration_option(timeout)
    specs = read_specs(filename)
    client = connect(config)
    results, failed = [], 0
    for source, body in specs:
        try:
            res = client.apply(body)
        except ApiError as e:
            if len(specs) == 1:
                raise
            failed += 1  # the others still go in, like kubectl apply
            note(f"{source}:")
            print_error(e)
            continue
        results.append(res)
        w = res["workload"]
        if output is Format.TABLE:
            out.print(f"workload/{w['name']} {res['result']} (version {w['version']})")
    if wait:
        for res in results:
            w = wait_running(client, res["workload"]["name"], None, seconds)
            note(f"workload/{w['name']}: {running_count(w)}/{w['replicas_wanted']} running")
    if output is not Format.TABLE:
        print_document(results[0] if len(specs) == 1 else {"results": results}, output)
    if failed:
        raise CloudlessError(f"{failed} of {len(specs)} workloads were not applied")


def scale(
    name: Annotated[str, typer.Argument(help="Workload name.")],
    replicas: Annotated[int, typer.Argument(help="How many replicas to run.", min=0)],
    config: ConfigOpt = None,
) -> None:
    """Set how many replicas a workload runs."""
    w = connect(config).call("POST", f"/v1/workloads/{name}/scale", {"replicas": replicas})
    out.print(f"workload/{w['name']} scaled to {w['replicas_wanted']}")


delete_app = typer.Typer(no_args_is_help=True, help="Delete a workload (or remove a node).")
remove_app = typer.Typer(no_args_is_help=True, help="Remove a node from the cluster.")


@delete_app.command("workload")
def delete_workload(
    name: Annotated[str, typer.Argument(help="Workload name.")],
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete its persistent volumes' data.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Stop a workload's replicas and delete it. Its volumes' data stays on the nodes unless
    --volumes is given."""
    connect(config).call("DELETE", f"/v1/workloads/{name}" + ("?volumes=true" if volumes else ""))
    what = " and their volumes" if volumes else ""
    out.print(f"workload/{name} deleting (its replicas{what} are being stopped)")


@remove_app.command("node")
def remove_node(
    node: Annotated[str, typer.Argument(help="Node id or name.")], config: ConfigOpt = None
) -> None:
    """Remove a node for good: its certificate is revoked and its replicas move elsewhere."""
    client = connect(config)
    node_id = resolve_node_id(client, node)
    client.call("DELETE", f"/v1/nodes/{node_id}")
    out.print(f"node/{node_id} removed; its certificate is revoked")


def _node_op(verb: str, past: str, doc: str) -> Any:
    def op(
        node: Annotated[str, typer.Argument(help="Node id or name.")], config: ConfigOpt = None
    ) -> None:
        client = connect(config)
        node_id = resolve_node_id(client, node)
        n = client.call("POST", f"/v1/nodes/{node_id}/{verb}")
        out.print(f"node/{n.get('name') or node_id} ({node_id}) {past}: state {n.get('state')}")

    op.__doc__ = doc
    op.__name__ = verb
    return op


def drain(
    node: Annotated[str, typer.Argument(help="Node id or name.")],
    deadline: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Stop what is still there after this long (10m), even if its replacement is "
            "not ready; without it the drain waits for every replacement.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Move a node's replicas elsewhere (each stops once its replacement is ready) and cordon
    it."""
    body = None
    if deadline is not None:
        body = {"deadline_s": duration_option(deadline, "--deadline")}
    client = connect(config)
    node_id = resolve_node_id(client, node)
    n = client.call("POST", f"/v1/nodes/{node_id}/drain", body)
    dep = n.get("departure") or {}
    by = f", deadline in {dep['deadline'] - dep['announced_at']:.0f}s" if dep else ""
    out.print(f"node/{n.get('name') or node_id} ({node_id}) draining: state {n.get('state')}{by}")


wait_app = typer.Typer(no_args_is_help=True, help="Wait for a condition (for scripts).")


@wait_app.command("workload")
def wait_workload(
    name: Annotated[str, typer.Argument(help="Workload name.")],
    running: Annotated[
        int | None, typer.Option(help="Replicas that must run (default: all wanted).", min=0)
    ] = None,
    timeout: Annotated[str, typer.Option(help="Give up after (exit 1): 60s, 5m.")] = "60s",
    config: ConfigOpt = None,
) -> None:
    """Wait until a workload has N running replicas."""
    seconds = duration_option(timeout)
    w = wait_running(connect(config), name, running, seconds)
    out.print(f"workload/{name}: {running_count(w)}/{w['replicas_wanted']} running")


def explain(
    name: Annotated[str | None, typer.Argument(help="Workload name.")] = None,
    filename: Annotated[
        str | None, typer.Option("--filename", "-f", help="Explain a spec not yet applied.")
    ] = None,
    top: Annotated[int, typer.Option(help="How many best nodes to list.", min=1)] = 5,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Why a workload can (or cannot) be placed, and the best nodes for it."""
    if (name is None) == (filename is None):
        raise ValidationError("explain: give a workload NAME or -f FILE (one of them)")
    client = connect(config)
    if filename is not None:
        ex = client.call(
            "POST",
            f"/v1/explain?top={top}",
            raw=read_spec(filename),
            content_type="application/yaml",
        )
    else:
        ex = client.call("GET", f"/v1/workloads/{name}/explain?top={top}")
    if output is not Format.TABLE:
        print_document(ex, output)
        return
    out.print(f"workload {ex['workload']}: {ex['summary']}")
    for n in ex.get("notes") or []:
        out.print(f"  note: {n}")
    best = ex.get("best") or []
    if best:
        names = node_names(client.nodes())
        print_table(fmt.explain_headers(best), fmt.explain_rows(best, names), what="best nodes")


def register(app: typer.Typer) -> None:
    panel = "Workloads"
    app.command(rich_help_panel=panel)(apply)
    app.command(rich_help_panel=panel)(scale)
    app.command(rich_help_panel=panel)(explain)
    app.add_typer(delete_app, name="delete", rich_help_panel=panel)
    app.add_typer(wait_app, name="wait", rich_help_panel=panel)
    nodes = "Nodes"
    app.command("cordon", rich_help_panel=nodes)(
        _node_op("cordon", "cordoned", "Stop placing new replicas on a node.")
    )
    app.command("uncordon", rich_help_panel=nodes)(
        _node_op("uncordon", "uncordoned", "Let the scheduler place replicas on a node again.")
    )
    app.command("drain", rich_help_panel=nodes)(drain)
    app.add_typer(remove_app, name="remove", rich_help_panel=nodes)
    delete_app.command("node", hidden=True)(remove_node)
