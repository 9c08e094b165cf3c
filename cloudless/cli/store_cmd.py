"""``cloudless store snapshot save``: a consistent backup of the cluster store.

It talks to a coordinator's embedded etcd member directly, with that coordinator's etcd
client certificate (``<data-dir>/tls/etcd-client.{crt,key}`` and ``etcd-ca.pem``), so run it
on a coordinator host. Restore is described in docs/store.md.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from cloudless.cli import fmt
from cloudless.cli.daemons import default_dir
from cloudless.cli.output import out
from cloudless.lib.errors import CloudlessError

store_app = typer.Typer(no_args_is_help=True, help="Back up the cluster store.")
snapshot_app = typer.Typer(no_args_is_help=True, help="etcd snapshots.")


def tls_files(data_dir: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) of the coordinator's etcd client; a missing one names the file
    and what to check."""
    tls = data_dir / "tls"
    files = (tls / "etcd-ca.pem", tls / "etcd-client.crt", tls / "etcd-client.key")
    for f in files:
        if not f.exists():
            raise CloudlessError(
                f"{f} does not exist: --data-dir must be the data dir of a coordinator that "
                "runs the etcd store (not --store memory)"
            )
    return files


async def _save(endpoint: str, files: tuple[Path, Path, Path], dest: Path) -> Any:
    from cloudless.store.backup import save_snapshot
    from cloudless.store.etcd import EtcdStore
    from cloudless.store.tls import ClientTls

    store = EtcdStore([endpoint], ClientTls.from_files(*files))
    try:
        return await save_snapshot(store, dest)
    finally:
        await store.close()


@snapshot_app.command("save")
def save(
    file: Annotated[Path, typer.Argument(help="Where to write the snapshot.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(help="The coordinator's data dir. Default ~/.cloudless/coordinator."),
    ] = None,
    endpoint: Annotated[
        str, typer.Option(help="etcd client endpoint HOST:PORT of that coordinator.")
    ] = "127.0.0.1:2379",
) -> None:
    """Save a consistent snapshot of the store (with its SHA-256)."""
    files = tls_files((data_dir or default_dir("coordinator")).expanduser())
    if file.exists():
        raise CloudlessError(f"{file} already exists: choose a new file name")
    if not file.parent.exists():
        raise CloudlessError(f"{file.parent}: no such directory")
    info = asyncio.run(_save(endpoint, files, file))
    out.print(f"snapshot saved to {info.path} ({fmt.human_size(info.size)}, sha256 {info.sha256})")


def register(app: typer.Typer) -> None:
    store_app.add_typer(snapshot_app, name="snapshot")
    app.add_typer(store_app, name="store", rich_help_panel="Cluster")
