"""Entry point of the ``cloudless`` console script.

Every command's errors end here: a ``CloudlessError`` (the API's refusals included), a
connection or TLS failure, or bad input is printed as ``error: ...`` on stderr with exit
code 1 — never a traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

from cloudless.cli import (
    actions,
    ca_cmd,
    daemons,
    dev,
    net_cmd,
    netpolicy_cmd,
    policies,
    resources,
    rollout_cmd,
    s3_cmd,
    secrets_cmd,
    store_cmd,
    streams,
    tokens,
    top_cmd,
    users,
)
from cloudless.cli.output import print_error
from cloudless.lib.errors import CloudlessError


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def _leaf_error(e: BaseException) -> BaseException:
    """The error to show from (possibly nested) exception groups: the first user-facing
    CloudlessError, else the first exception."""
    leaves = _leaves(e) or [e]
    return next((x for x in leaves if isinstance(x, CloudlessError)), leaves[0])


class CloudlessGroup(TyperGroup):
    """Turns every user-facing failure into ``error: ...`` and exit code 1."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, _click.ClickException):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except (Exception, BaseExceptionGroup) as e:
            leaf = _leaf_error(e)
            if isinstance(leaf, typer.Exit | typer.Abort | _click.ClickException):
                raise leaf from None
            if isinstance(leaf, BrokenPipeError):  # `cloudless logs x -f | head`: end quietly
                raise leaf from None
            print_error(leaf)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=CloudlessGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Cloudless: one compute fabric from many devices.",
)


@app.command(rich_help_panel="Cluster")
def version() -> None:
    """Print the Cloudless version."""
    from cloudless import __version__

    typer.echo(__version__)


daemons.register(app)
actions.register(app)
resources.register(app)
net_cmd.register(app)
netpolicy_cmd.register(app)
streams.register(app)
tokens.register(app)
users.register(app)
policies.register(app)
ca_cmd.register(app)
secrets_cmd.register(app)
rollout_cmd.register(app)
top_cmd.register(app)
store_cmd.register(app)
s3_cmd.register(app)
dev.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
