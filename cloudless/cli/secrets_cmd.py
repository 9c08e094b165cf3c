"""``cloudless secret``: create, list, delete secrets and rotate their key. Values go up, never
come back: no command prints one. ``cloudless config``: the same for configs (a name space of
their own), whose values ``config get`` does print. Both kinds share one implementation of
reading a value, listing and deleting (``_value``, ``_list``, ``_delete``)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

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
    else:
        value = _value(from_literal, from_file)
    body = {"name": name, "data": base64.b64encode(value).decode(), "type": kind}
    res = connect(config).call("POST", "/v1/secrets", body)
    note(f"secret {res['name']}: version {res['version']}, {res['size']} bytes")


def _value(from_literal: str | None, from_file: Path | None) -> bytes:
    """The value given by exactly one of --from-literal and --from-file."""
    if (from_literal is None) == (from_file is None):
        raise typer.BadParameter("give exactly one of --from-literal or --from-file")
    if from_file is None:
        return (from_literal or "").encode()
    try:
        return from_file.read_bytes()
    except OSError as e:
        raise typer.BadParameter(f"{from_file}: {e.strerror}", param_hint="--from-file") from None


Row = Callable[[dict[str, Any], float], list[str]]


def _list(kind: str, headers: list[str], row: Row, config: Path | None, output: Format) -> None:
    """``GET /v1/<kind>s`` as a table of ``row``s, or the document (-o json/yaml)."""
    plural = f"{kind}s"
    rows = connect(config).call("GET", f"/v1/{plural}")[plural]
    if output is not Format.TABLE:
        print_document({plural: rows}, output)
        return
    t = now()
    print_table(headers, [row(r, t) for r in rows], what=plural)


def _delete(kind: str, name: str, config: Path | None) -> None:
    connect(config).call("DELETE", f"/v1/{kind}s/{name}")
    note(f"{kind} {name} deleted")


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
    """Secrets: name, type, size, version and last update (never the value)."""

    def row(r: dict[str, Any], t: float) -> list[str]:
        return [r["name"], r.get("type", "opaque"), *_size_version_age(r, t)]

    _list("secret", SECRET_HEADERS, row, config, output)


def _size_version_age(r: dict[str, Any], t: float) -> list[str]:
    return [fmt.human_size(r["size"]), str(r["version"]), fmt.age(t, r["updated_at"])]


@secret_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The secret's name.")], config: ConfigOpt = None
) -> None:
    """Delete a secret (replicas already running keep their copy until they are replaced)."""
    _delete("secret", name, config)


@secret_app.command("rotate-key")
def rotate_key(config: ConfigOpt = None) -> None:
    """Re-seal every secret, config and object-store access key under the next key generation."""
    res = connect(config).call("POST", "/v1/secrets/rotate", {})
    note(
        f"key generation {res['generation']}; {res['resealed']} secrets, configs and "
        "object-store access keys re-sealed"
    )
    for why in res.get("not_resealed", []):
        note(f"not re-sealed: {why}")


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
    value = _value(from_literal, from_file)
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
    _list(
        "config", CONFIG_HEADERS, lambda r, t: [r["name"], *_size_version_age(r, t)], config, output
    )


@config_app.command("delete")
def delete_config(
    name: Annotated[str, typer.Argument(help="The config's name.")], config: ConfigOpt = None
) -> None:
    """Delete a config (replicas already running keep their copy until they are replaced)."""
    _delete("config", name, config)


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret", rich_help_panel="Workloads")
    app.add_typer(config_app, name="config", rich_help_panel="Workloads")
