"""Parsing the ``health:`` block of a workload spec, and back to plain data.

Like the rest of the spec parser, every problem is reported through ``add(path, reason)`` and
parsing goes on, so a user sees all of them at once. Durations are seconds (number) or a string
with a unit: ``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from cloudless.model.health import (
    MAX_GRACE_S,
    MAX_INTERVAL_S,
    MAX_THRESHOLD,
    MAX_TIMEOUT_S,
    MIN_INTERVAL_S,
    HealthChecks,
    Probe,
    ProbeKind,
)

Add = Callable[[str, str], None]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_PROBE_FIELDS = {
    "exec",
    "http",
    "tcp",
    "interval",
    "timeout",
    "success_threshold",
    "failure_threshold",
    "start_grace",
}
MAX_COMMAND_ARGS = 64
MAX_PATH_LENGTH = 1024


def parse_duration(v: Any) -> float:
    """Seconds from a number or ``"<n>ms|s|m|h"``; raises ValueError naming the problem."""
    if isinstance(v, bool):
        raise ValueError(f'{v!r} is not a duration (e.g. 5, "500ms", "5s", "1m")')
    if isinstance(v, int | float):
        secs = float(v)
    elif isinstance(v, str) and (m := _DURATION.match(v)):
        secs = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise ValueError(f'{v!r} is not a duration (e.g. 5, "500ms", "5s", "1m")')
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"{v!r} is not a duration of zero or more seconds")
    return secs


def _duration(v: Any, path: str, add: Add, lo: float, hi: float, default: float) -> float:
    if v is None:
        return default
    try:
        secs = parse_duration(v)
    except ValueError as e:
        add(path, str(e))
        return default
    if not lo <= secs <= hi:
        add(path, f"{secs:g}s is out of range [{lo:g}s, {hi:g}s]")
        return default
    return secs


def _threshold(v: Any, path: str, add: Add, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        add(path, f"{v!r} is not a whole number")
        return default
    if not 1 <= v <= MAX_THRESHOLD:
        add(path, f"{v} is out of range [1, {MAX_THRESHOLD}]")
        return default
    return v


def _port(v: Any, path: str, add: Add, ports: tuple[int, ...]) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        add(path, f"{v!r} is not a port number 1-65535")
        return 0
    if v not in ports:
        declared = ", ".join(map(str, ports)) or "none"
        add(path, f"{v} is not a declared port (spec.ports: {declared}); add it to ports")
        return 0
    return v


def parse_probe(v: Any, path: str, add: Add, ports: tuple[int, ...]) -> Probe | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        add(path, f"expected a mapping, got {type(v).__name__}")
        return None
    for k in v:
        if k not in _PROBE_FIELDS:
            add(f"{path}.{k}", f"unknown field (known: {', '.join(sorted(_PROBE_FIELDS))})")
    kinds = [k for k in ("exec", "http", "tcp") if k in v]
    if len(kinds) != 1:
        got = ", ".join(kinds) or "none"
        add(path, f"needs exactly one of exec, http, tcp (got {got})")
        return None
    kind = ProbeKind(kinds[0])
    kp = f"{path}.{kind.value}"
    raw = v[kind.value]
    command: tuple[str, ...] = ()
    port = 0
    http_path = "/"
    if kind is ProbeKind.EXEC:
        if isinstance(raw, str):
            raw = ["sh", "-c", raw]
        if not isinstance(raw, list) or not raw:
            add(kp, 'expected a non-empty command list, e.g. ["test", "-f", "/tmp/ok"]')
        elif len(raw) > MAX_COMMAND_ARGS:
            add(kp, f"{len(raw)} arguments, at most {MAX_COMMAND_ARGS}")
        elif not all(isinstance(a, str) and "\x00" not in a for a in raw):
            add(kp, "every argument must be a string without NUL bytes")
        else:
            command = tuple(raw)
    else:
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = {"port": raw}
        if not isinstance(raw, dict):
            add(kp, f"expected a mapping with port, got {type(raw).__name__}")
            return None
        allowed = {"port", "path"} if kind is ProbeKind.HTTP else {"port"}
        for k in raw:
            if k not in allowed:
                add(f"{kp}.{k}", f"unknown field (known: {', '.join(sorted(allowed))})")
        if "port" not in raw:
            add(f"{kp}.port", "is required")
        else:
            port = _port(raw["port"], f"{kp}.port", add, ports)
        if kind is ProbeKind.HTTP:
            http_path = raw.get("path", "/")
            if (
                not isinstance(http_path, str)
                or not http_path.startswith("/")
                or len(http_path) > MAX_PATH_LENGTH
                or any(c.isspace() or ord(c) < 32 for c in http_path)
            ):
                add(f"{kp}.path", f"{http_path!r} is not a URL path (starts with /, no spaces)")
                http_path = "/"
    interval = _duration(
        v.get("interval"), f"{path}.interval", add, MIN_INTERVAL_S, MAX_INTERVAL_S, 10.0
    )
    timeout = _duration(
        v.get("timeout"), f"{path}.timeout", add, 0.001, MAX_TIMEOUT_S, min(1.0, interval)
    )
    if timeout > interval:
        add(f"{path}.timeout", f"{timeout:g}s is longer than the interval ({interval:g}s)")
        timeout = interval
    return Probe(
        kind=kind,
        command=command,
        port=port,
        path=http_path,
        interval_s=interval,
        timeout_s=timeout,
        success_threshold=_threshold(
            v.get("success_threshold"), f"{path}.success_threshold", add, 1
        ),
        failure_threshold=_threshold(
            v.get("failure_threshold"), f"{path}.failure_threshold", add, 3
        ),
        start_grace_s=_duration(
            v.get("start_grace"), f"{path}.start_grace", add, 0.0, MAX_GRACE_S, 0.0
        ),
    )


def parse_health(v: Any, path: str, add: Add, ports: tuple[int, ...]) -> HealthChecks:
    if v is None:
        return HealthChecks()
    if not isinstance(v, dict):
        add(path, f"expected a mapping, got {type(v).__name__}")
        return HealthChecks()
    for k in v:
        if k not in ("liveness", "readiness"):
            add(f"{path}.{k}", "unknown field (known: liveness, readiness)")
    return HealthChecks(
        liveness=parse_probe(v.get("liveness"), f"{path}.liveness", add, ports),
        readiness=parse_probe(v.get("readiness"), f"{path}.readiness", add, ports),
    )


def probe_to_dict(p: Probe) -> dict[str, Any]:
    out: dict[str, Any]
    match p.kind:
        case ProbeKind.EXEC:
            out = {"exec": list(p.command)}
        case ProbeKind.HTTP:
            out = {"http": {"port": p.port, "path": p.path}}
        case ProbeKind.TCP:
            out = {"tcp": {"port": p.port}}
    out.update(
        interval=p.interval_s,
        timeout=p.timeout_s,
        success_threshold=p.success_threshold,
        failure_threshold=p.failure_threshold,
        start_grace=p.start_grace_s,
    )
    return out


def health_to_dict(h: HealthChecks) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if h.liveness is not None:
        out["liveness"] = probe_to_dict(h.liveness)
    if h.readiness is not None:
        out["readiness"] = probe_to_dict(h.readiness)
    return out


#: For other spec parsers: a duration field with bounds and a default.
duration_field = _duration
