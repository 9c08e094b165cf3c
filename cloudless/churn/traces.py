"""Availability traces: when each device is online, as sorted ``(start, end)`` sessions in
seconds from the start of the trace, plus which of its departures are planned (announced
ahead: a laptop lid closing at the end of the working day, a phone on low battery).

Synthetic device classes (shapes after the volunteer-computing availability studies:
diurnal and weekly patterns on desktops/laptops, heavy-tailed Weibull session and gap
lengths elsewhere):

* ``server``: a home server, always meant to be on: long Weibull sessions (days) broken by
  outages of 1-12 h (ISP, power, the owner's reboots) -- about 85-90% online;
* ``laptop``: diurnal: on weekdays from ~8-10h to ~17-19h with a lunch gap sometimes, some
  evenings, rarely at weekends; the evening shutdown is planned;
* ``iot``: a flaky link: Weibull sessions of ~3 h, drops of ~10-40 min;
* ``phone``: roaming: short sessions (~1 h) on and off through the day, more in the evening;
  a departure on low battery (a third) is planned.

CSV format (``load_csv``): a header ``device,class,start_s,end_s,planned`` then one line per
online session; ``planned`` (0/1) says whether the departure that ends it was announced.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloudless.lib.errors import ValidationError

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
CLASSES = ("server", "laptop", "iot", "phone")


@dataclass(frozen=True)
class Trace:
    device: str
    cls: str
    sessions: tuple[tuple[float, float], ...]
    planned: frozenset[float] = field(default_factory=frozenset)  # ends announced ahead

    def online_at(self, t: float) -> bool:
        return any(s <= t < e for s, e in self.sessions)

    def availability(self, start: float, end: float) -> float:
        on = sum(max(0.0, min(e, end) - max(s, start)) for s, e in self.sessions)
        return on / (end - start) if end > start else 0.0


def _merge(sessions: Iterable[tuple[float, float]], length: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(sessions):
        s, e = max(0.0, s), min(length, e)
        if e - s < 60.0:
            continue
        if out and s <= out[-1][1] + 60.0:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _alternating(
    rng: random.Random, length: float, up: tuple[float, float], down: tuple[float, float]
) -> list[tuple[float, float]]:
    """Weibull (scale, shape) session and gap lengths, starting online at a random phase."""
    out = []
    t = -rng.uniform(0, up[0])
    while t < length:
        u = up[0] * rng.weibullvariate(1.0, up[1])
        out.append((t, t + u))
        t += u + down[0] * rng.weibullvariate(1.0, down[1])
    return out


def synthetic(cls: str, device: str, rng: random.Random, length: float = 2 * WEEK_S) -> Trace:
    """A trace of class ``cls`` (one of ``CLASSES``) for ``length`` seconds (from a Monday
    00:00)."""
    planned: set[float] = set()
    if cls == "server":
        sessions = _alternating(rng, length, (1.5 * DAY_S, 0.8), (5 * 3600.0, 1.0))
    elif cls == "iot":
        sessions = _alternating(rng, length, (3 * 3600.0, 0.7), (30 * 60.0, 1.2))
    elif cls == "laptop":
        raw = []
        for day in range(math.ceil(length / DAY_S)):
            d0 = day * DAY_S
            weekend = day % 7 >= 5
            if weekend and rng.random() < 0.7:
                continue
            start = d0 + rng.uniform(7.5, 10.0) * 3600
            end = d0 + rng.uniform(16.5, 19.5) * 3600
            if rng.random() < 0.4:  # lunch break: lid closed (planned)
                mid = d0 + rng.uniform(12.0, 13.0) * 3600
                raw.append((start, mid))
                planned.add(mid)
                start = mid + rng.uniform(0.5, 1.0) * 3600
            raw.append((start, end))
            planned.add(end)
            if rng.random() < 0.35:  # an evening session
                s = d0 + rng.uniform(20.0, 21.0) * 3600
                e = s + rng.uniform(0.5, 2.5) * 3600
                raw.append((s, e))
                planned.add(e)
        sessions = raw
    elif cls == "phone":
        raw = []
        t = rng.uniform(0, 3600)
        while t < length:
            hour = (t % DAY_S) / 3600
            evening = 18 <= hour < 23
            u = (1.5 if evening else 0.7) * 3600 * rng.weibullvariate(1.0, 0.9)
            g = (0.6 if evening else 1.2) * 3600 * rng.weibullvariate(1.0, 0.8)
            raw.append((t, t + u))
            if rng.random() < 0.33:
                planned.add(t + u)
            t += u + g
        sessions = raw
    else:
        raise ValidationError(f"trace class {cls!r}: expected one of {', '.join(CLASSES)}")
    merged = _merge(sessions, length)
    ends = {e for _, e in merged}
    return Trace(device, cls, tuple(merged), frozenset(p for p in planned if p in ends))


def load_csv(text: str) -> dict[str, Trace]:
    """Traces from the CSV format above. Raises ValidationError naming the line and field."""
    rows = list(csv.reader(io.StringIO(text)))
    want = ["device", "class", "start_s", "end_s", "planned"]
    if not rows or [c.strip() for c in rows[0]] != want:
        raise ValidationError(f"trace csv line 1: expected the header {','.join(want)}")
    by: dict[str, tuple[str, list[tuple[float, float]], set[float]]] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 5:
            raise ValidationError(f"trace csv line {n}: expected 5 fields, got {len(row)}")
        device, cls, raw_s, raw_e, raw_p = (c.strip() for c in row)
        if not device:
            raise ValidationError(f"trace csv line {n}: device is empty")
        try:
            s, e = float(raw_s), float(raw_e)
        except ValueError:
            raise ValidationError(
                f"trace csv line {n}: start_s and end_s must be numbers of seconds"
            ) from None
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0 or e <= s:
            raise ValidationError(f"trace csv line {n}: need 0 <= start_s < end_s (got {s}, {e})")
        if raw_p not in ("0", "1", ""):
            raise ValidationError(f"trace csv line {n}: planned must be 0 or 1 (got {raw_p!r})")
        entry = by.setdefault(device, (cls, [], set()))
        if entry[0] != cls:
            raise ValidationError(
                f"trace csv line {n}: device {device} was class {entry[0]!r}, now {cls!r}"
            )
        if entry[1] and s < entry[1][-1][1]:
            raise ValidationError(
                f"trace csv line {n}: sessions of {device} must be sorted and not overlap"
            )
        entry[1].append((s, e))
        if raw_p == "1":
            entry[2].add(e)
    return {d: Trace(d, c, tuple(ss), frozenset(p)) for d, (c, ss, p) in by.items()}


def dump_csv(traces: Iterable[Trace]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["device", "class", "start_s", "end_s", "planned"])
    for t in traces:
        for s, e in t.sessions:
            w.writerow([t.device, t.cls, f"{s:.0f}", f"{e:.0f}", int(e in t.planned)])
    return out.getvalue()
