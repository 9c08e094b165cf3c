"""Daemon logs: one record per line, JSON for machines or plain text for terminals.

Every record carries the same keys, whichever component wrote it: ``time`` (ISO 8601,
UTC), ``level``, ``component`` (the logger name, e.g. ``cloudless.coordinator.dispatcher``),
``message``, and, when known, ``node``, ``workload``, ``replica`` and ``trace_id``. Those
context keys come from ``bind(...)`` (a context variable, so a task's values do not leak into
another's) or from a record's ``extra``; the trace id from the current OpenTelemetry span.
Existing ``logging.getLogger`` calls need no change: structlog formats stdlib records.
The level can change at run time (``set_level``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
CONTEXT_KEYS = ("node", "workload", "replica")
Format = Literal["json", "console"]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at set-up)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _rename(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["message"] = event.pop("event", "")
    event["component"] = event.pop("logger", "")
    record = event.get("_record")
    if record is not None:
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None and key not in event:
                event[key] = value
    return event


def _trace_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - a dependency; tolerate its absence in logs
        return event
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = f"{ctx.trace_id:032x}"
    return event


def _console(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """``time level component: message key=value ...`` and the traceback, if any."""
    head = (
        f"{str(event.pop('time', ''))[:19]} {str(event.pop('level', '')).upper():<7} "
        f"{event.pop('component', '')}: {event.pop('message', '')}"
    )
    exc = event.pop("exception", None)
    rest = " ".join(f"{k}={v}" for k, v in sorted(event.items()))
    line = f"{head} {rest}" if rest else head
    return f"{line}\n{exc}" if exc else line


def formatter(fmt: Format) -> logging.Formatter:
    """A stdlib formatter rendering records with the shared keys, in ``fmt``."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _trace_id,
    ]
    render: Any = structlog.processors.JSONRenderer() if fmt == "json" else _console
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            _rename,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            render,
        ],
        pass_foreign_args=False,
    )


def setup(level: str, fmt: str = "console") -> None:
    """Route every stdlib logger to stderr in ``fmt`` at ``level``; chatty libraries stay
    at warning unless debugging. Raises ``ValueError`` naming the allowed values."""
    lvl, f = level.lower(), fmt.lower()
    if lvl not in LEVELS:
        raise ValueError(f"{level!r} is not one of {', '.join(LEVELS)}")
    if f not in FORMATS:
        raise ValueError(f"{fmt!r} is not one of {', '.join(FORMATS)}")
    handler = _StderrHandler()
    handler.setFormatter(formatter(f))  # type: ignore[arg-type]
    logging.basicConfig(level=getattr(logging, lvl.upper()), handlers=[handler], force=True)
    _quiet_libraries(lvl)


def set_level(level: str, logger: str = "") -> str:
    """Change a logger's level now (the root when ``logger`` is empty); returns the level
    set. Raises ``ValueError`` for an unknown level."""
    lvl = level.lower()
    if lvl not in LEVELS:
        raise ValueError(f"{level!r} is not one of {', '.join(LEVELS)}")
    logging.getLogger(logger or None).setLevel(getattr(logging, lvl.upper()))
    if not logger:
        _quiet_libraries(lvl)
    return lvl


def current_level(logger: str = "") -> str:
    return logging.getLevelName(logging.getLogger(logger or None).getEffectiveLevel()).lower()


def _quiet_libraries(lvl: str) -> None:
    for noisy in ("aiohttp.access", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if lvl == "debug" else logging.WARNING)


@contextmanager
def bind(**context: str) -> Iterator[None]:
    """Add ``node``/``workload``/``replica`` (or other keys) to every record logged in this
    context (this task and the ones it starts)."""
    tokens = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
