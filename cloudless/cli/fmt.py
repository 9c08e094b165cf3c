"""Pure formatting for the command line: API JSON in, rows of strings out.

Nothing here prints or talks to the network, so every column is tested as a table of
worked examples (tests/unit/cli/test_fmt.py). ``now`` is always passed in.
"""

from __future__ import annotations

import re
import time
from typing import Any

Row = list[str]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, *, allow_zero: bool = False) -> float:
    """Seconds from ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m`` or a plain number of seconds;
    zero (``0``, ``0s``) only with ``allow_zero``.

    Raises ValueError naming the accepted forms.
    """
    s = text.strip().lower()
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{text!r} must be {'0 or more' if allow_zero else 'positive'}")
        return v
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 15m, 24h, 7d, 1h30m)")
    if total <= 0 and not allow_zero:
        raise ValueError(f"{text!r} must be positive")
    return total


def parse_labels(items: list[str] | None, what: str = "--label") -> dict[str, str]:
    """``["zone=a", "gpu=yes"]`` -> ``{"zone": "a", "gpu": "yes"}``; a missing ``=`` or key is
    a ValueError naming the item."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def human_duration(seconds: float) -> str:
    """Two most significant units, kubectl style: ``45s``, ``3m12s``, ``5h3m``, ``2d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def age(now: float, then: float | None) -> str:
    """Time since ``then`` (a Unix time); ``-`` when never (None or 0)."""
    if not then:
        return "-"
    return human_duration(now - then)


def human_size(n: int | float) -> str:
    """Binary units with at most one decimal: ``512B``, ``1.5Ki``, ``16Mi``, ``2Gi``."""
    v = float(n)
    for unit in ("B", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if abs(v) < 1024 or unit == "Pi":
            text = f"{v:.1f}".rstrip("0").rstrip(".") if unit != "B" else str(int(v))
            return f"{text}{unit}"
        v /= 1024
    raise AssertionError("unreachable")


def human_cpu(millis: int) -> str:
    """Whole cores when exact (``2``), else millicores (``1500m``)."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def clock_time(t: float) -> str:
    """Local wall-clock time of an event: ``2026-11-25 19:40:03``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def percent(used: int, total: int) -> str:
    return "-" if total <= 0 else f"{round(100 * used / total)}%"


def compact(spec: Any, keep: frozenset[str] = frozenset({"replicas"})) -> Any:
    """A spec without its defaults' noise: empty lists and maps, zeros, ``false`` and empty
    strings are dropped at every level, except keys in ``keep`` (``replicas: 0`` matters)."""
    if isinstance(spec, dict):
        out = {}
        for k, v in spec.items():
            c = compact(v, keep)
            if k in keep or c not in ({}, [], 0, False, "", None):
                out[k] = c
        return out
    if isinstance(spec, list):
        return [compact(v, keep) for v in spec]
    return spec


# ---- tables -------------------------------------------------------------------------------

NODE_HEADERS = ["ID", "NAME", "STATE", "ZONE", "REGION", "ARCH", "CPU", "MEMORY", "HEARTBEAT"]


def node_row(n: dict[str, Any], now: float) -> Row:
    """CPU and MEMORY are ``used/allocatable (percent)``; HEARTBEAT is the age of the last one."""
    alloc, use = n.get("allocatable", {}), n.get("usage", {})
    ac, uc = int(alloc.get("cpu_millis", 0)), int(use.get("cpu_millis", 0))
    am, um = int(alloc.get("memory_bytes", 0)), int(use.get("memory_bytes", 0))
    return [
        str(n.get("id", "")),
        str(n.get("name", "")),
        str(n.get("state", "")),
        str(n.get("zone") or "-"),
        str(n.get("region") or "-"),
        str(n.get("arch", "")),
        f"{human_cpu(uc)}/{human_cpu(ac)} ({percent(uc, ac)})",
        f"{human_size(um)}/{human_size(am)} ({percent(um, am)})",
        age(now, n.get("last_heartbeat")),
    ]


WORKLOAD_HEADERS = ["NAME", "RUNNING", "VERSION", "AGE", "UNPLACED"]


def workload_row(w: dict[str, Any], now: float) -> Row:
    """RUNNING is ``running/wanted``; UNPLACED is the count and the scheduler's reason."""
    wanted = int(w.get("replicas_wanted", 0))
    running = int(w.get("replicas_running", 0))
    name = str(w.get("name", ""))
    if w.get("deleted"):
        name += " (deleting)"
    unplaced = int(w.get("unplaced", 0))
    reason = str(w.get("unplaced_reason") or "")
    return [
        name,
        f"{running}/{wanted}",
        str(w.get("version", "")),
        age(now, w.get("created_at")),
        f"{unplaced}: {reason}" if unplaced and reason else str(unplaced) if unplaced else "-",
    ]


REPLICA_HEADERS = [
    "ID", "WORKLOAD", "NODE", "DESIRED", "OBSERVED", "READY", "RESTARTS", "AGE", "REASON"
]  # fmt: skip


def replica_row(r: dict[str, Any], now: float, node_names: dict[str, str] | None = None) -> Row:
    """NODE shows the node's name when known (else its id, or ``-`` when unplaced); AGE counts
    from the start of the current run, or from creation if it never started. READY is yes/no
    for a running replica (no: failing its readiness check, the reason says why), else -."""
    node_id = str(r.get("node_id") or "")
    node = (node_names or {}).get(node_id, node_id) or "-"
    reason = str(r.get("reason") or "")
    if r.get("exit_code") is not None and r.get("observed") in ("exited", "failed"):
        reason = f"exit {r['exit_code']}" + (f": {reason}" if reason else "")
    running = r.get("observed") == "running"
    ready = ("yes" if r.get("ready") else "no") if running else "-"
    if running and not r.get("ready") and not reason:
        reason = str(r.get("health") or "")
    return [
        str(r.get("id", "")),
        str(r.get("workload", "")),
        node,
        str(r.get("desired", "")),
        str(r.get("observed", "")),
        ready,
        str(r.get("restarts", 0)),
        age(now, r.get("started_at") or r.get("created_at")),
        reason or "-",
    ]


VOLUME_HEADERS = ["VOLUME", "WORKLOAD", "NODE", "MOUNT", "USED/SIZE", "QUOTA", "MODE", "REPLICA"]


def volume_row(v: dict[str, Any], node_names: dict[str, str] | None = None) -> Row:
    """USED/SIZE: bytes used as its agent last measured (``?`` before) over the spec's size
    hint (``-`` without one); QUOTA is how its agent holds it to the hint (``image``: enforced,
    ``report``: usage only reported, ``?``: not reported yet); REPLICA is its replica's observed
    state (``lost``: waiting for its node)."""
    node_id = str(v.get("node_id") or "")
    size = int(v.get("size_hint_bytes") or 0)
    return [
        str(v.get("name", "")),
        str(v.get("workload", "")),
        (node_names or {}).get(node_id, node_id) or "-",
        str(v.get("mount_path", "")),
        ("?" if v.get("used_bytes") is None else human_size(int(v["used_bytes"])))
        + "/"
        + (human_size(size) if size else "-"),
        str(v.get("quota") or "?"),
        "ro" if v.get("read_only") else "rw",
        str(v.get("replica_state", "")),
    ]


TOKEN_HEADERS = ["ID", "USE", "STATE", "EXPIRES", "LABELS", "USED BY"]


def token_row(t: dict[str, Any], now: float) -> Row:
    """EXPIRES is ``in 23h59m`` while in the future, ``5m ago`` after."""
    exp = float(t.get("expires_at", 0))
    expires = f"in {human_duration(exp - now)}" if exp > now else f"{human_duration(now - exp)} ago"
    labels = ",".join(f"{k}={v}" for k, v in sorted((t.get("labels") or {}).items()))
    return [
        str(t.get("token_id", "")),
        str(t.get("use", "")),
        str(t.get("state", "")),
        expires,
        labels or "-",
        str(t.get("used_by") or "-"),
    ]


def explain_headers(best: list[dict[str, Any]]) -> list[str]:
    """``#``, ``NODE``, ``TOTAL``, then each score factor in first-seen order, ``AFFINITY``."""
    factors: list[str] = []
    for b in best:
        for k in b:
            if k not in ("node", "total", "affinity") and k not in factors:
                factors.append(k)
    return ["#", "NODE", "TOTAL", *(f.upper() for f in factors), "AFFINITY"]


def explain_rows(best: list[dict[str, Any]], node_names: dict[str, str] | None = None) -> list[Row]:
    heads = explain_headers(best)
    factors = [h.lower() for h in heads[3:-1]]
    rows = []
    for i, b in enumerate(best, 1):
        node = str(b.get("node", ""))
        name = (node_names or {}).get(node)
        rows.append(
            [
                str(i),
                f"{name} ({node})" if name and name != node else node,
                f"{float(b.get('total', 0)):.3f}",
                *(f"{float(b[f]):.2f}" if f in b else "-" for f in factors),
                f"{float(b.get('affinity', 0)):+.2f}",
            ]
        )
    return rows


def event_line(e: dict[str, Any]) -> str:
    """``2026-11-25 19:40:03  workload  workload hello created (version 1)``."""
    return f"{clock_time(float(e.get('at', 0)))}  {e.get('kind', ''):<9} {e.get('message', '')}"
