"""``cloudless dev up``: keep a local cluster (the demo's) running for hands-on use."""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

dev_app = typer.Typer(no_args_is_help=True, help="A local cluster for trying Cloudless out.")
console = Console(highlight=False)


@dev_app.command("up")
def up(
    devices: Annotated[int, typer.Option(help="How many devices (network namespaces).")] = 3,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where state and logs go. Default: a new temp dir.")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the work dir after shutdown.")] = False,
) -> None:
    """Start a coordinator, a registry with busybox and DEVICES agents (each in its own
    network namespace with its own containerd); run until Ctrl-C, then remove everything."""
    from cloudless.demo import demo_cluster, preflight

    if not 1 <= devices <= 12:
        raise typer.BadParameter("between 1 and 12", param_hint="--devices")
    work = work_dir or Path(tempfile.mkdtemp(prefix="cloudless-dev-"))
    work.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        cluster = demo_cluster(work, devices, lambda line: console.print(f"  {line}"))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            preflight()
            await cluster.start()
            console.print(
                "\n[bold green]cluster up.[/] In another shell:\n"
                f"  export CLOUDLESS_CONFIG={cluster.admin_config}\n"
                "  cloudless get nodes\n"
                f"  sed 's#127.0.0.1:5000/busybox:1#{cluster.image}#' examples/hello.yaml"
                " | cloudless apply -f -\n"
                "  cloudless s3 status     # the object store: a node per device\n"
                "  cloudless s3 key create me\n"
                "  cloudless s3 bucket create my-bucket --owner <key id>\n"
                f"  S3 endpoints: {', '.join(cluster.s3_endpoint(i) for i in range(devices))}\n"
                f"logs: {cluster.logs}\nCtrl-C stops and removes everything."
            )
            await stop.wait()
        finally:
            console.print("stopping…")
            await cluster.close()
            for left in cluster.leftovers():
                console.print(f"[yellow]left behind:[/] {left}")

    asyncio.run(main())
    if not keep and work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev", rich_help_panel="Cluster")
