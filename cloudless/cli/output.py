"""Printing: rich tables on stdout, messages and errors on stderr, JSON/YAML documents.

Data goes to stdout and everything else (progress, notes, errors) to stderr, so
``cloudless token create`` and ``-o json`` can be captured by a script.
"""

from __future__ import annotations

import enum
import errno
import http.client
import json
import os
import ssl
from typing import Any

import yaml
from rich import box
from rich.console import Console, ConsoleDimensions
from rich.table import Table
from rich.text import Text

from cloudless.cli.client import ApiError
from cloudless.lib.errors import CloudlessError, ValidationError

PIPE_WIDTH = 200


class _Console(Console):
    """A console that, writing to a pipe or file with no COLUMNS set, is wide enough for a
    table not to fold (``cloudless get nodes | grep ready`` keeps one line per node)."""

    @property
    def size(self) -> ConsoleDimensions:
        s = super().size
        if not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(max(s.width, PIPE_WIDTH), s.height)
        return s

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


# Markup is off: names, reasons and log lines are data ("zone not in [eu-1a]"), never styles.
out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def document(data: Any, fmt: Format) -> str:
    """``data`` as JSON (indented, keys in order) or YAML (block style)."""
    if fmt is Format.YAML:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(data, indent=2)


def print_document(data: Any, fmt: Format) -> None:
    out.print(document(data, fmt))


def table(headers: list[str], rows: list[list[str]], title: str | None = None) -> Table:
    t = Table(
        box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False
    )
    for h in headers:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*(Text(c) for c in r))  # literal text: never parsed as markup
    return t


def print_table(headers: list[str], rows: list[list[str]], what: str) -> None:
    """A table without a title (kubectl style); ``no <what> found`` on stderr if empty."""
    if not rows:
        note(f"no {what} found")
        return
    out.print(table(headers, rows))


def note(message: str) -> None:
    err.print(message)


def error_lines(e: BaseException) -> list[str]:
    """What the user sees for an error: ``error: <message>`` then one line per problem.

    An API error whose message is just its problems joined (a validation error) lists the
    problems only; connection and TLS failures say what failed and where to look.
    """
    if isinstance(e, ApiError):
        problems = list(e.problems)
        if problems and e.message == "; ".join(problems):
            return ["error: the request was refused:", *(f"  {p}" for p in problems)]
        return [f"error: {e.message}", *(f"  {p}" for p in problems)]
    if isinstance(e, ValidationError) and len(e.problems) > 1:
        return ["error: invalid input:", *(f"  {p}" for p in e.problems)]
    if isinstance(e, CloudlessError):
        return [f"error: {e.message}"]
    code, details = getattr(e, "code", None), getattr(e, "details", None)
    if callable(code) and callable(details):  # a gRPC error: its status and details only
        status = code()
        return [f"error: {getattr(status, 'name', status)}: {details()}"]
    if isinstance(e, ssl.SSLError):
        return [f"error: TLS failed: {e} (is --config the right cluster's client config?)"]
    if isinstance(e, FileNotFoundError) and e.filename:
        return [f"error: {e.filename}: no such file"]
    if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
        return [f"error: {e}: another process (a coordinator already running?) uses that port"]
    if isinstance(e, ConnectionError | http.client.HTTPException):
        return [f"error: the connection failed: {e}"]
    if isinstance(e, OSError):
        return [f"error: {e}"]
    return [f"error: {e}"]


def print_error(e: BaseException) -> None:
    for line in error_lines(e):
        err.print(line, style="red" if line.startswith("error") else None)
