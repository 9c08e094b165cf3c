"""Entry point of the ``cloudless`` console script.

Every command's errors end here: a ``CloudlessError`` (the API's refusals included), a
connection or TLS failure, or bad input is printed as ``error: ...`` on stderr with exit
code 1 — never a traceback. Ctrl-C exits 130.

Commands are loaded on demand: ``cloudless NAME ...`` imports only the modules that define
NAME (``COMMANDS``), so a command (a daemon included) does not pay for importing every other
one. Listing the commands (``--help``, a name that is not a command, shell completion) loads
them all, in the order of ``MODULES``; the result is the same group either way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

from cloudless.lib.errors import CloudlessError

# The modules that register commands, in the order their commands are listed.
MODULES = (
    "daemons",
    "actions",
    "resources",
    "net_cmd",
    "netpolicy_cmd",
    "streams",
    "tokens",
    "users",
    "policies",
    "ca_cmd",
    "secrets_cmd",
    "rollout_cmd",
    "top_cmd",
    "store_cmd",
    "s3_cmd",
    "dev",
)

# Command name -> the modules to import for it: the first registers it, the others add
# subcommands to its group when imported. Must name every command the modules register.
COMMANDS: dict[str, tuple[str, ...]] = {
    "coordinator": ("daemons",),
    "agent": ("daemons",),
    "apply": ("actions",),
    "scale": ("actions",),
    "explain": ("actions",),
    "cordon": ("actions",),
    "uncordon": ("actions",),
    "drain": ("actions",),
    "delete": ("actions",),
    "wait": ("actions",),
    "remove": ("actions", "ca_cmd"),
    "get": ("resources",),
    "describe": ("resources", "net_cmd"),
    "net": ("net_cmd",),
    "netpolicy": ("netpolicy_cmd",),
    "logs": ("streams",),
    "events": ("streams",),
    "ui": ("streams",),
    "token": ("tokens",),
    "audit": ("users",),
    "user": ("users",),
    "role": ("users",),
    "policy": ("policies",),
    "ca": ("ca_cmd",),
    "secret": ("secrets_cmd",),
    "config": ("secrets_cmd",),
    "rollout": ("rollout_cmd",),
    "top": ("top_cmd",),
    "store": ("store_cmd",),
    "s3": ("s3_cmd",),
    "dev": ("dev",),
}

_registered: dict[str, typer.Typer] = {}


def module_app(module: str) -> typer.Typer:
    """The commands of ``cloudless.cli.<module>``, registered once per process (a module's
    ``register`` adds to groups it shares, so it must not run twice)."""
    if module not in _registered:
        sub = typer.Typer()
        register: Callable[[typer.Typer], None] = importlib.import_module(
            f"cloudless.cli.{module}"
        ).register
        register(sub)
        _registered[module] = sub
    return _registered[module]


def module_commands(module: str) -> dict[str, _click.Command]:
    """The click commands of ``module``, by name, in Typer's order."""
    return dict(typer.main.get_group(module_app(module)).commands)


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
    """Turns every user-facing failure into ``error: ...`` and exit code 1, and loads each
    command from ``COMMANDS`` when it is first asked for."""

    _all_loaded = False

    def _load_all(self) -> None:
        if self._all_loaded:
            return
        for module in MODULES:  # all imported before any is converted: see ``COMMANDS``
            module_app(module)
        # Typer's order: every plain command, then every group, each in registration order.
        loaded = [c for m in MODULES for c in module_commands(m).items()]
        own = [(n, c) for n, c in self.commands.items() if n not in COMMANDS]
        merged = [*own, *loaded]
        self.commands = dict(
            [(n, c) for n, c in merged if not isinstance(c, TyperGroup)]
            + [(n, c) for n, c in merged if isinstance(c, TyperGroup)]
        )
        self._all_loaded = True

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in self.commands:
            modules = COMMANDS.get(cmd_name)
            if modules is None:
                self._load_all()  # so that the "No such command" error suggests close names
            else:
                for module in modules[1:]:
                    importlib.import_module(f"cloudless.cli.{module}")
                self.commands[cmd_name] = module_commands(modules[0])[cmd_name]
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)

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
            from cloudless.cli.output import print_error

            print_error(leaf)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=CloudlessGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Cloudless: one compute fabric from many devices.",
)


@app.callback()
def _group() -> None:
    # A callback makes the app a group of commands while it holds only ``version``.
    pass


@app.command(rich_help_panel="Cluster")
def version() -> None:
    """Print the Cloudless version."""
    from cloudless import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
