"""``cloudless policy``: CEL admission policies (apply with a dry run, list, delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudless.cli.output import Format, note, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect
from cloudless.lib.errors import CloudlessError

policy_app = typer.Typer(no_args_is_help=True, help="Admission policies written in CEL.")


@policy_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Policy in YAML or JSON.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what it would deny; store nothing.")
    ] = False,
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Compile and store a policy; lists the existing workloads it would deny."""
    try:
        text = file.read_bytes()
    except OSError as e:
        raise CloudlessError(f"cannot read {file}: {e.strerror}") from None
    path = "/v1/policies" + ("?dry_run=true" if dry_run else "")
    res = connect(config).call("POST", path, raw=text, content_type="application/yaml")
    if output is not Format.TABLE:
        print_document(res, output)
        return
    name = res["policy"]["name"]
    would = res["would_deny"]
    if dry_run:
        note(f"dry run: policy {name} compiled, not stored")
    else:
        out.print(f"policy {name} applied ({res['policy']['mode']})")
    if would:
        note(f"{len(would)} existing workload(s) would be denied:")
        print_table(
            ["WORKLOAD", "NAMESPACE", "WHY"],
            [[w["workload"], w["namespace"], w["why"]] for w in would],
            what="workloads",
        )
    else:
        note("no existing workload would be denied")


@policy_app.command("list")
def list_policies(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Every policy, its mode, scope and expressions."""
    ps = connect(config).call("GET", "/v1/policies")["policies"]
    if output is not Format.TABLE:
        print_document({"policies": ps}, output)
        return
    rows = [
        [
            p["name"],
            p["mode"],
            ", ".join(p.get("namespaces") or ["*"]),
            "; ".join(v["expression"] for v in p["validations"]),
        ]
        for p in ps
    ]
    print_table(["NAME", "MODE", "NAMESPACES", "EXPRESSIONS"], rows, what="policies")


@policy_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="Policy name.")], config: ConfigOpt = None
) -> None:
    """Delete a policy."""
    connect(config).call("DELETE", f"/v1/policies/{name}")
    out.print(f"policy {name} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy", rich_help_panel="Access")
