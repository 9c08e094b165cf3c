"""``cloudless s3``: access keys, buckets and the object-store layout, through the user API
(``/v1/s3/...``, role-checked like every write): any user whose role allows it runs these
from anywhere, no etcd credentials needed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cloudless.cli import fmt
from cloudless.cli.output import Format, out, print_document, print_table
from cloudless.cli.session import ConfigOpt, OutputOpt, connect, now

s3_app = typer.Typer(no_args_is_help=True, help="The S3 object store: keys, buckets, layout.")
key_app = typer.Typer(no_args_is_help=True, help="S3 access keys.")
bucket_app = typer.Typer(no_args_is_help=True, help="S3 buckets and who may use them.")
layout_app = typer.Typer(no_args_is_help=True, help="Which nodes store which partitions.")


def _print(lines: list[str]) -> None:
    for line in lines:
        out.print(line, highlight=False, markup=False)


def _lines(config: Any, method: str, path: str, body: Any = None) -> None:
    _print(connect(config).call(method, path, body)["lines"])


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    config: ConfigOpt = None,
) -> None:
    """Create an access key; prints its id and secret (the secret is shown only here)."""
    k = connect(config).call("POST", "/v1/s3/keys", {"name": name})
    _print([f"access key id:     {k['key_id']}", f"secret access key: {k['secret']}"])


@key_app.command("list")
def key_list(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Access keys: id, who they are for, age (never a secret)."""
    rows = connect(config).call("GET", "/v1/s3/keys")["keys"]
    if output is not Format.TABLE:
        print_document({"keys": rows}, output)
        return
    t = now()
    print_table(
        ["KEY ID", "NAME", "AGE"],
        [[r["key_id"], r["name"], fmt.age(t, r["created"])] for r in rows],
        what="access keys",
    )


@key_app.command("delete")
def key_delete(
    key_id: Annotated[str, typer.Argument(help="Access key id.")], config: ConfigOpt = None
) -> None:
    """Delete an access key and its grants on every bucket (requests signed with it are
    refused within seconds)."""
    out = connect(config).call("DELETE", f"/v1/s3/keys/{key_id}")
    revoked = out.get("revoked") or []
    grants = f"; its grants on {', '.join(revoked)} removed" if revoked else ""
    _print([f"access key {key_id} deleted{grants}"])


@bucket_app.command("create")
def bucket_create(
    name: Annotated[str, typer.Argument(help="Bucket name (S3 rules).")],
    owner: Annotated[str, typer.Option(help="Access key id that owns the bucket.")],
    config: ConfigOpt = None,
) -> None:
    """Create a bucket owned by an access key."""
    b = connect(config).call("POST", "/v1/s3/buckets", {"name": name, "owner": owner})
    _print([f"bucket {b['name']} created, owner {b['owner']}"])


@bucket_app.command("list")
def bucket_list(config: ConfigOpt = None, output: OutputOpt = Format.TABLE) -> None:
    """Buckets, their owners, which keys may use them, whether anyone may read them
    (public-read) and how many lifecycle and CORS rules they have."""
    rows = connect(config).call("GET", "/v1/s3/buckets")["buckets"]
    if output is not Format.TABLE:
        print_document({"buckets": rows}, output)
        return
    print_table(
        ["NAME", "OWNER", "ALLOWED", "PUBLIC", "RULES"],
        [
            [
                r["name"],
                r["owner"],
                ", ".join(f"{k}:{p}" for k, p in sorted(r["allow"].items())),
                "read" if r.get("public_read") else "",
                ", ".join(
                    f"{what} {r[f]}"
                    for what, f in (("lifecycle", "lifecycle_rules"), ("cors", "cors_rules"))
                    if r.get(f)
                ),
            ]
            for r in rows
        ],
        what="buckets",
    )


@bucket_app.command("allow")
def bucket_allow(
    name: Annotated[str, typer.Argument(help="Bucket name.")],
    key: Annotated[str, typer.Argument(help="Access key id.")],
    perm: Annotated[str, typer.Option(help="read, write or owner.")] = "read",
    config: ConfigOpt = None,
) -> None:
    """Give an access key read, write or owner permission on a bucket."""
    b = connect(config).call("POST", f"/v1/s3/buckets/{name}/allow", {"key": key, "perm": perm})
    _print([f"{key}: {b['allow'][key]} on bucket {b['name']}"])


@layout_app.command("show")
def layout_show(config: ConfigOpt = None) -> None:
    """Show the layout: versions, nodes, partitions held, staged changes."""
    _lines(config, "GET", "/v1/s3/layout")


@layout_app.command("stage")
def layout_stage(
    node: Annotated[str, typer.Argument(help="Node id.")],
    zone: Annotated[str | None, typer.Option(help="The node's zone (site).")] = None,
    capacity: Annotated[
        str | None, typer.Option(help="Storage capacity (e.g. 500G); 0 = gateway.")
    ] = None,
    remove: Annotated[bool, typer.Option(help="Remove the node from the layout.")] = False,
    replication: Annotated[int | None, typer.Option(help="Stage a replication factor.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Stage a node's role (or its removal); see the effect with `preview`."""
    if remove == (zone is not None):
        raise typer.BadParameter("give either --zone (with --capacity) or --remove")
    body: dict[str, Any] = {"node": node}
    if remove:
        body["remove"] = True
    else:
        body.update(zone=zone, capacity=capacity or "0")
    if replication is not None:
        body["replication"] = replication
    _lines(config, "POST", "/v1/s3/layout/stage", body)


@layout_app.command("preview")
def layout_preview(config: ConfigOpt = None) -> None:
    """What applying the staged changes would do, and how many copies would move."""
    _lines(config, "GET", "/v1/s3/layout/preview")


@layout_app.command("apply")
def layout_apply(
    version: Annotated[int, typer.Option(help="The current version you previewed against.")],
    config: ConfigOpt = None,
) -> None:
    """Apply the staged changes as the next layout version."""
    _lines(config, "POST", "/v1/s3/layout/apply", {"version": version})


@s3_app.command("status")
def status(config: ConfigOpt = None) -> None:
    """The object-store nodes agents registered (their S3 endpoints) and the layout."""
    _lines(config, "GET", "/v1/s3/status")


def register(app: typer.Typer) -> None:
    s3_app.add_typer(key_app, name="key")
    s3_app.add_typer(bucket_app, name="bucket")
    s3_app.add_typer(layout_app, name="layout")
    app.add_typer(s3_app, name="s3", rich_help_panel="Cluster")
