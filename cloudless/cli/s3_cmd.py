"""``cloudless s3``: access keys, buckets and the object-store layout, in the cluster store.

Like ``cloudless store snapshot``, it talks to a coordinator's etcd directly with that
coordinator's etcd client certificate, so run it on a coordinator host. The logic lives in
``cloudless.objectstore.admin``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cloudless.cli.daemons import default_dir
from cloudless.cli.output import out
from cloudless.cli.store_cmd import tls_files
from cloudless.lib.clock import SystemClock
from cloudless.lib.errors import ValidationError
from cloudless.store.protocol import Store

T = TypeVar("T")
s3_app = typer.Typer(no_args_is_help=True, help="The S3 object store: keys, buckets, layout.")
key_app = typer.Typer(no_args_is_help=True, help="S3 access keys.")
bucket_app = typer.Typer(no_args_is_help=True, help="S3 buckets and who may use them.")
layout_app = typer.Typer(no_args_is_help=True, help="Which nodes store which partitions.")

DataDir = Annotated[
    Path | None, typer.Option(help="The coordinator's data dir. Default ~/.cloudless/coordinator.")
]
Endpoint = Annotated[str, typer.Option(help="etcd client endpoint HOST:PORT of that coordinator.")]


def _run(data_dir: Path | None, endpoint: str, fn: Callable[[Store], Awaitable[T]]) -> T:
    from cloudless.store.etcd import EtcdStore
    from cloudless.store.tls import ClientTls

    files = tls_files((data_dir or default_dir("coordinator")).expanduser())

    async def go() -> T:
        store = EtcdStore([endpoint], ClientTls.from_files(*files))
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _print(lines: list[str]) -> None:
    for line in lines:
        out.print(line, highlight=False)


@key_app.command("create")
def key_create(
    name: Annotated[str, typer.Argument(help="Who the key is for.")],
    data_dir: DataDir = None,
    endpoint: Endpoint = "127.0.0.1:2379",
) -> None:
    """Create an access key; prints its id and secret (the secret is shown only here)."""
    from cloudless.objectstore import admin

    k = _run(data_dir, endpoint, lambda s: admin.create_key(s, SystemClock(), name))
    _print([f"access key id:     {k.key_id}", f"secret access key: {k.secret}"])


@bucket_app.command("create")
def bucket_create(
    name: Annotated[str, typer.Argument(help="Bucket name (S3 rules).")],
    owner: Annotated[str, typer.Option(help="Access key id that owns the bucket.")],
    data_dir: DataDir = None,
    endpoint: Endpoint = "127.0.0.1:2379",
) -> None:
    """Create a bucket owned by an access key."""
    from cloudless.objectstore import admin

    b = _run(data_dir, endpoint, lambda s: admin.create_bucket(s, SystemClock(), name, owner))
    _print([f"bucket {b.name} created, owner {b.owner}"])


@bucket_app.command("allow")
def bucket_allow(
    name: Annotated[str, typer.Argument(help="Bucket name.")],
    key: Annotated[str, typer.Argument(help="Access key id.")],
    perm: Annotated[str, typer.Option(help="read, write or owner.")] = "read",
    data_dir: DataDir = None,
    endpoint: Endpoint = "127.0.0.1:2379",
) -> None:
    """Give an access key read, write or owner permission on a bucket."""
    from cloudless.objectstore import admin

    b = _run(data_dir, endpoint, lambda s: admin.allow(s, SystemClock(), name, key, perm))
    _print([f"{key}: {b.allow[key]} on bucket {b.name}"])


@layout_app.command("show")
def layout_show(data_dir: DataDir = None, endpoint: Endpoint = "127.0.0.1:2379") -> None:
    """Show the layout: versions, nodes, partitions held, staged changes."""
    from cloudless.objectstore import admin
    from cloudless.objectstore.layout_store import LayoutStore

    async def show(s: Store) -> Any:
        return admin.render_history(await LayoutStore(s).show())

    _print(_run(data_dir, endpoint, show))


@layout_app.command("stage")
def layout_stage(
    node: Annotated[str, typer.Argument(help="Node id.")],
    zone: Annotated[str | None, typer.Option(help="The node's zone (site).")] = None,
    capacity: Annotated[
        str | None, typer.Option(help="Storage capacity (e.g. 500G); 0 = gateway.")
    ] = None,
    remove: Annotated[bool, typer.Option(help="Remove the node from the layout.")] = False,
    replication: Annotated[int | None, typer.Option(help="Stage a replication factor.")] = None,
    data_dir: DataDir = None,
    endpoint: Endpoint = "127.0.0.1:2379",
) -> None:
    """Stage a node's role (or its removal); see the effect with `preview`."""
    from cloudless.model.resources import parse_size
    from cloudless.objectstore import admin
    from cloudless.objectstore.layout_store import LayoutStore

    if remove == (zone is not None):
        raise ValidationError("give either --zone (with --capacity) or --remove")
    try:
        size = None if capacity is None else parse_size(capacity)
    except ValueError as e:
        raise ValidationError(f"--capacity: {e}") from None

    async def go(s: Store) -> list[str]:
        if replication is not None:
            await LayoutStore(s).stage_replication(replication)
        return await admin.stage(s, node, zone, size)

    _print(_run(data_dir, endpoint, go))


@layout_app.command("preview")
def layout_preview(data_dir: DataDir = None, endpoint: Endpoint = "127.0.0.1:2379") -> None:
    """What applying the staged changes would do, and how many copies would move."""
    from cloudless.objectstore import admin
    from cloudless.objectstore.layout_store import LayoutStore

    async def go(s: Store) -> list[str]:
        return admin.render_plan(await LayoutStore(s).preview())

    _print(_run(data_dir, endpoint, go))


@layout_app.command("apply")
def layout_apply(
    version: Annotated[int, typer.Option(help="The current version you previewed against.")],
    data_dir: DataDir = None,
    endpoint: Endpoint = "127.0.0.1:2379",
) -> None:
    """Apply the staged changes as the next layout version."""
    from cloudless.objectstore import admin

    _print(_run(data_dir, endpoint, lambda s: admin.apply(s, version)))


@s3_app.command("status")
def status(data_dir: DataDir = None, endpoint: Endpoint = "127.0.0.1:2379") -> None:
    """The object-store nodes agents registered (their S3 endpoints) and the layout."""
    from cloudless.objectstore import admin

    _print(_run(data_dir, endpoint, admin.status))


def register(app: typer.Typer) -> None:
    s3_app.add_typer(key_app, name="key")
    s3_app.add_typer(bucket_app, name="bucket")
    s3_app.add_typer(layout_app, name="layout")
    app.add_typer(s3_app, name="s3", rich_help_panel="Cluster")
