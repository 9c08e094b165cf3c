"""``cloudless secret``: create, list, delete secrets and rotate their key. Values go up, never
come back: no command prints one."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, note, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, now

secret_app = typer.Typer(no_args_is_help=True, help="Create, list and delete secrets.")

SECRET_HEADERS = ["NAME", "SIZE", "VERSION", "UPDATED"]


@secret_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The secret's name (lowercase, digits, -).")],
    from_literal: Annotated[
        str | None, typer.Option("--from-literal", help="The value, as given.")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="The value: this file's bytes.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a secret, or give an existing one a new value (its version goes up and the
    replicas using it as a file see the new value)."""
    if (from_literal is None) == (from_file is None):
        raise typer.BadParameter("give exactly one of --from-literal or --from-file")
    if from_file is not None:
        try:
            value = from_file.read_bytes()
        except OSError as e:
            raise typer.BadParameter(
                f"{from_file}: {e.strerror}", param_hint="--from-file"
            ) from None
    else:
        value = (from_literal or "").encode()
    body = {"name": name, "data": base64.b64encode(value).decode()}
    res = connect(config).call("POST", "/v1/secrets", body)
    note(f"secret {res['name']}: version {res['version']}, {res['size']} bytes")


@secret_app.command("list")
def list_secrets(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Secrets: name, size, version and last update (never the value)."""
    rows = connect(config).call("GET", "/v1/secrets")["secrets"]
    if output is not Format.TABLE:
        print_document({"secrets": rows}, output)
        return
    t = now()
    print_table(
        SECRET_HEADERS,
        [
            [r["name"], fmt.human_size(r["size"]), str(r["version"]), fmt.age(t, r["updated_at"])]
            for r in rows
        ],
        what="secrets",
    )


@secret_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The secret's name.")], config: ConfigOpt = None
) -> None:
    """Delete a secret (replicas already running keep their copy until they are replaced)."""
    connect(config).call("DELETE", f"/v1/secrets/{name}")
    note(f"secret {name} deleted")


@secret_app.command("rotate-key")
def rotate_key(config: ConfigOpt = None) -> None:
    """Re-seal every secret under the next key generation."""
    res = connect(config).call("POST", "/v1/secrets/rotate", {})
    note(f"key generation {res['generation']}; {res['resealed']} secrets re-sealed")


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret", rich_help_panel="Workloads")
