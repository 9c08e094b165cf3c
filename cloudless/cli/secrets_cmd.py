"""``cloudless secret``: create, list, delete secrets and rotate their key. Values go up, never
come back: no command prints one. ``cloudless config``: the same for configs, whose values
``config get`` does print."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, note, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, now
from cloudless.model.registry_auth import REGISTRY, registry_secret

secret_app = typer.Typer(no_args_is_help=True, help="Create, list and delete secrets.")

SECRET_HEADERS = ["NAME", "TYPE", "SIZE", "VERSION", "UPDATED"]


@secret_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The secret's name (lowercase, digits, -).")],
    from_literal: Annotated[
        str | None, typer.Option("--from-literal", help="The value, as given.")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="The value: this file's bytes (--type registry: a docker config.json).",
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option("--type", help="opaque (default), or registry: credentials for image pulls."),
    ] = "opaque",
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="--type registry: the registry host[:port]."),
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="--type registry: the user name.")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="--type registry: read the password from standard input."
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Create a secret, or give an existing one a new value (its version goes up and the
    replicas using it as a file see the new value).

    Registry credentials, named by a workload's image_pull_secret:
    `echo "$PW" | cloudless secret create regcred --type registry --registry reg:5000
    --username deploy --password-stdin` (or --from-file ~/.docker/config.json)."""
    if registry is not None or username is not None or password_stdin:
        value = _registry_value(kind, registry, username, password_stdin, from_literal, from_file)
    elif (from_literal is None) == (from_file is None):
        raise typer.BadParameter("give exactly one of --from-literal or --from-file")
    elif from_file is not None:
        try:
            value = from_file.read_bytes()
        except OSError as e:
            raise typer.BadParameter(
                f"{from_file}: {e.strerror}", param_hint="--from-file"
            ) from None
    else:
        value = (from_literal or "").encode()
    body = {"name": name, "data": base64.b64encode(value).decode(), "type": kind}
    res = connect(config).call("POST", "/v1/secrets", body)
    note(f"secret {res['name']}: version {res['version']}, {res['size']} bytes")


def _registry_value(
    kind: str,
    registry: str | None,
    username: str | None,
    password_stdin: bool,
    from_literal: str | None,
    from_file: Path | None,
) -> bytes:
    if kind != REGISTRY:
        raise typer.BadParameter(
            "--registry, --username and --password-stdin go with --type registry",
            param_hint="--type",
        )
    if from_literal is not None or from_file is not None:
        raise typer.BadParameter(
            "give --registry/--username/--password-stdin or --from-file, not both"
        )
    if not registry or not username:
        raise typer.BadParameter("--type registry needs --registry and --username")
    if not password_stdin:
        raise typer.BadParameter(
            "--password-stdin is required (a password on the command line would be kept in "
            "shell history and visible to other users)"
        )
    password = sys.stdin.read().rstrip("\r\n")
    if not password:
        raise typer.BadParameter("standard input held no password", param_hint="--password-stdin")
    return registry_secret(registry, username, password)


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
            [
                r["name"],
                r.get("type", "opaque"),
                fmt.human_size(r["size"]),
                str(r["version"]),
                fmt.age(t, r["updated_at"]),
            ]
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


config_app = typer.Typer(
    no_args_is_help=True,
    help="Create, show, list and delete configs (non-secret files for workloads).",
)
CONFIG_HEADERS = ["NAME", "SIZE", "VERSION", "UPDATED"]


@config_app.command("create")
def create_config(
    name: Annotated[str, typer.Argument(help="The config's name (lowercase, digits, -).")],
    from_literal: Annotated[
        str | None, typer.Option("--from-literal", help="The value, as given.")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="The value: this file's bytes.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a config, or give an existing one a new value (replicas mounting it as a file
    see the new value in place). Workloads name it under configs: {name, path}."""
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
    res = connect(config).call("POST", "/v1/configs", body)
    note(f"config {res['name']}: version {res['version']}, {res['size']} bytes")


@config_app.command("get")
def get_config(
    name: Annotated[str, typer.Argument(help="The config's name.")],
    config: ConfigOpt = None,
    output: OutputOpt = Format.TABLE,
) -> None:
    """Print a config's value (-o json/yaml: with its metadata, the value base64-encoded)."""
    doc = connect(config).call("GET", f"/v1/configs/{name}")
    if output is not Format.TABLE:
        print_document(doc, output)
        return
    sys.stdout.buffer.write(base64.b64decode(doc["data"]))
    sys.stdout.flush()


@config_app.command("list")
def list_configs(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Configs: name, size, version and last update."""
    rows = connect(config).call("GET", "/v1/configs")["configs"]
    if output is not Format.TABLE:
        print_document({"configs": rows}, output)
        return
    t = now()
    print_table(
        CONFIG_HEADERS,
        [
            [r["name"], fmt.human_size(r["size"]), str(r["version"]), fmt.age(t, r["updated_at"])]
            for r in rows
        ],
        what="configs",
    )


@config_app.command("delete")
def delete_config(
    name: Annotated[str, typer.Argument(help="The config's name.")], config: ConfigOpt = None
) -> None:
    """Delete a config (replicas already running keep their copy until they are replaced)."""
    connect(config).call("DELETE", f"/v1/configs/{name}")
    note(f"config {name} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret", rich_help_panel="Workloads")
    app.add_typer(config_app, name="config", rich_help_panel="Workloads")
