"""Pure parts of the harness: /proc parsing, event matching and summaries (unit-tested)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.common import percentile


def cpu_seconds(stat_text: str, ticks_per_s: float) -> float:
    """utime + stime of one process from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after
    the last ``)``: utime and stime are fields 14 and 15, i.e. 12th and 13th after it.
    """
    rest = stat_text.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / ticks_per_s


def rss_bytes(status_text: str) -> int:
    """Resident set size from ``/proc/<pid>/status`` (``VmRSS: 123 kB``); 0 if absent."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class Event:
    at: float  # coordinator wall clock (same host as the harness)
    kind: str
    message: str
    fields: dict[str, Any]


def parse_event(doc: dict[str, Any]) -> Event:
    fields = {k: v for k, v in doc.items() if k not in ("at", "kind", "message")}
    return Event(float(doc["at"]), str(doc["kind"]), str(doc["message"]), fields)


def first_after(events: Iterable[Event], t0: float, *, kind: str, **match: str) -> Event | None:
    """The earliest event of ``kind`` at or after ``t0`` whose fields equal ``match``."""
    best: Event | None = None
    for e in events:
        if e.kind != kind or e.at < t0:
            continue
        if all(e.fields.get(k) == v for k, v in match.items()):
            if best is None or e.at < best.at:
                best = e
    return best


def summary(
    values: list[float], goal_p50: float | None = None, goal_p95: float | None = None
) -> dict[str, Any]:
    """Count, P50, P95, max (seconds) and whether the goals are met (None: no goal/no data)."""
    vals = [v for v in values if not math.isnan(v)]
    out: dict[str, Any] = {"n": len(vals)}
    if not vals:
        out.update(p50=None, p95=None, max=None)
        return out
    p50, p95 = percentile(vals, 50), percentile(vals, 95)
    out.update(p50=round(p50, 4), p95=round(p95, 4), max=round(max(vals), 4))
    if goal_p50 is not None:
        ok = p50 <= goal_p50 and (goal_p95 is None or p95 <= goal_p95)
        out["pass"] = ok
    return out


def split_counts(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal positive counts, larger first: 10, 3 -> 4, 3, 3."""
    parts = max(1, min(parts, total)) if total > 0 else 0
    if parts == 0:
        return []
    q, r = divmod(total, parts)
    return [q + 1 if i < r else q for i in range(parts)]


class Aimd:
    """An adaptive in-flight limit (additive increase, multiplicative decrease), as TCP does
    it: each answer faster than ``slow_s`` adds ``1/limit`` (about one more per round of
    answers), a slow answer multiplies by 0.7, a failure halves; always within [lo, hi].

    Used by the agent workers so enrollments keep about as many requests in flight as the
    coordinator answers quickly, instead of flooding it.
    """

    def __init__(self, start: float, lo: float = 1.0, hi: float = 64.0, slow_s: float = 3.0):
        self.lo, self.hi, self.slow_s = lo, hi, slow_s
        self.limit = min(hi, max(lo, start))

    def answered(self, seconds: float) -> None:
        if seconds > self.slow_s:
            self.limit = max(self.lo, self.limit * 0.7)
        else:
            self.limit = min(self.hi, self.limit + 1.0 / self.limit)

    def failed(self) -> None:
        self.limit = max(self.lo, self.limit / 2)

    @property
    def window(self) -> int:
        return int(self.limit)
