"""``cloudless.cli.main`` loads a command's module only when that command runs: starting
``cloudless`` imports none of the command modules or the heavy libraries behind them, a
client command imports its own module and not the daemons', and each command loaded on its
own is the same command (options, help, subcommands) as when every command is loaded.

Each check runs in a fresh interpreter: this test process has imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from cloudless.cli.main import COMMANDS, MODULES

# Libraries and packages that only some commands need.
HEAVY = (
    "grpc",
    "etcd3aio",
    "cryptography",
    "aiohttp",
    "numpy",
    "cloudless.coordinator",
    "cloudless.agent",
    "cloudless.store",
    "cloudless.security",
    "cloudless.runtime",
    "cloudless.api",
)


def loaded_after(code: str) -> list[str]:
    """The names in ``sys.modules`` of a fresh interpreter after ``code`` ran."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    names: list[str] = json.loads(done.stdout.splitlines()[-1])
    return names


def heavy_in(names: list[str], heavy: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(n == h or n.startswith(h + ".") for h in heavy)]


def test_starting_cloudless_imports_no_command_module() -> None:
    names = loaded_after(
        """
        from cloudless.cli.main import app
        try:
            app(["version"])
        except SystemExit:
            pass
        """
    )
    command_modules = tuple(f"cloudless.cli.{m}" for m in MODULES)
    assert heavy_in(names, HEAVY + command_modules) == []


def test_a_client_command_imports_only_its_own_module() -> None:
    names = loaded_after(
        """
        from cloudless.cli.main import app
        try:
            app(["token", "create", "--config", "/nonexistent.json"])
        except SystemExit:
            pass
        """
    )
    assert "cloudless.cli.tokens" in names
    others = tuple(f"cloudless.cli.{m}" for m in MODULES if m != "tokens")
    assert heavy_in(names, HEAVY + others) == []


# For each command: loaded alone into a fresh set of cloudless.cli modules, then with every
# command loaded. Prints {name: [alone, with all]} as JSON.
COMPARE = """
import json, sys
import typer
from typer.core import TyperGroup
from cloudless.cli import main

def shape(cmd):
    return {
        "name": cmd.name,
        "help": cmd.help,
        "hidden": cmd.hidden,
        "panel": getattr(cmd, "rich_help_panel", None),
        "params": [(p.name, list(p.opts), p.default) for p in cmd.params],
        "commands": (
            {n: shape(c) for n, c in cmd.commands.items()} if isinstance(cmd, TyperGroup) else None
        ),
    }

def fresh():
    for name in [n for n in sys.modules if n.startswith("cloudless.cli.") and n != __name__]:
        if name != "cloudless.cli.main":
            del sys.modules[name]
    main._registered.clear()

alone = {}
for name in main.COMMANDS:
    fresh()
    group = typer.main.get_command(main.app)
    alone[name] = shape(group.get_command(None, name))
fresh()
group = typer.main.get_command(main.app)
every = {n: shape(group.get_command(None, n)) for n in group.list_commands(None)}
print(json.dumps({"alone": alone, "every": every, "order": list(every)}, default=repr))
"""


def test_each_command_alone_is_the_command_among_all() -> None:
    done = subprocess.run(
        [sys.executable, "-c", COMPARE], capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert set(result["every"]) == {*COMMANDS, "version"}
    for name in COMMANDS:
        assert result["alone"][name] == result["every"][name], name
    assert result["order"][0] == "version"
