"""Entry point of the ``cloudless`` console script."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Cloudless: one compute fabric from many devices.")


@app.command()
def version() -> None:
    """Print the Cloudless version."""
    from cloudless import __version__

    typer.echo(__version__)


def main() -> None:
    app()
