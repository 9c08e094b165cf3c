"""Planned departures and owner-reserved hours.

A ``Departure`` on a node record says the node is about to stop taking work: its agent
announced it is leaving (``cloudless agent leave``, a sleep hook, SIGTERM with ``--leave-on-
stop``), a user drained it with a deadline, or its owner reserved the coming hours. While it
is set, the coordinator moves the node's replicas away make-before-break (a replacement is
ready before the old replica is stopped) until ``deadline``; after the deadline what is left
is stopped regardless (``cloudless.coordinator.deciders.departures`` has the rules).

Reserved hours are bins of the week in the same frame as ``cloudless.churn.model`` (168
one-hour bins, bin 0 = the hour-of-week of Unix time 0, a Thursday 00:00 UTC).
``parse_reserved("Mon-Fri 18-23; Sat,Sun 10-24", utc_offset_s)`` reads them as the owner
writes them, in the owner's local time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import ValidationError

HOUR_S = 3600.0
WEEK_BINS = 168
WEEK_S = HOUR_S * WEEK_BINS
# Unix time 0 was a Thursday 00:00 UTC; the next Monday 00:00 UTC is 4 days later.
_MONDAY_BIN = 96
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DepartureKind(enum.StrEnum):
    LEAVE = "leave"  # the agent announced it is going away
    DRAIN = "drain"  # a user drained the node with a deadline
    RESERVED = "reserved"  # the owner's reserved hours are coming


@dataclass(frozen=True, slots=True)
class Departure:
    kind: DepartureKind
    reason: str
    announced_at: float  # wall time
    deadline: float  # wall time: replicas still there then are stopped regardless

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "announced_at": self.announced_at,
            "deadline": self.deadline,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Departure:
        return cls(
            kind=DepartureKind(d["kind"]),
            reason=str(d.get("reason", "")),
            announced_at=float(d.get("announced_at", 0.0)),
            deadline=float(d.get("deadline", 0.0)),
        )


def week_bin(t: float) -> int:
    return int((t % WEEK_S) // HOUR_S)


def reserved_at(bins: frozenset[int], t: float) -> bool:
    return week_bin(t) in bins


def next_reserved(bins: frozenset[int], t: float, within_s: float) -> float | None:
    """The start of the first reserved hour in ``(t, t + within_s]``, or ``None``."""
    if not bins:
        return None
    start = (t // HOUR_S + 1) * HOUR_S
    while start <= t + within_s:
        if week_bin(start) in bins:
            return start
        start += HOUR_S
    return None


def reserved_end(bins: frozenset[int], t: float) -> float:
    """When the reserved stretch holding ``t`` ends (``t`` itself if it is not reserved)."""
    end = t
    for _ in range(WEEK_BINS):
        if week_bin(end) not in bins:
            return end
        end = (end // HOUR_S + 1) * HOUR_S
    return end


def _days(text: str, field: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        p = part.strip().lower()
        if p in ("daily", "*"):
            out.extend(range(7))
            continue
        lo, _, hi = p.partition("-")
        try:
            a = DAYS.index(lo[:3]) if lo else -1
            b = DAYS.index(hi[:3]) if hi else a
        except ValueError:
            raise ValidationError(
                f"{field}: {part.strip()!r} is not a day (Mon..Sun, a range Mon-Fri or daily)"
            ) from None
        if a < 0:
            raise ValidationError(f"{field}: empty day in {text!r}")
        out.extend((a + i) % 7 for i in range((b - a) % 7 + 1))
    return out


def _hours(text: str, field: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo.split(":")[0]), int(hi.split(":")[0])
    except ValueError:
        raise ValidationError(
            f"{field}: {text!r} is not an hour range (HH-HH in 24 h time, e.g. 18-23)"
        ) from None
    if not sep or not (0 <= a <= 23 and 1 <= b <= 24) or a == b:
        raise ValidationError(
            f"{field}: {text!r}: expected HH-HH with 0 <= start <= 23, 1 <= end <= 24, "
            "start != end (22-6 wraps past midnight)"
        )
    return a, b


def parse_reserved(
    text: str, utc_offset_s: float = 0.0, field: str = "reserved_hours"
) -> frozenset[int]:
    """Week bins from ``"DAYS HH-HH; DAYS HH-HH"`` in local time ``UTC + utc_offset_s``.

    ``DAYS`` is ``Mon``, ``Mon-Fri``, ``Sat,Sun`` or ``daily``; the end hour is exclusive and
    a range ending before it starts runs past midnight into the next day. Errors name
    ``field`` and the part that is wrong.
    """
    bins: set[int] = set()
    shift = round(utc_offset_s / HOUR_S)
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        days_text, _, hours_text = item.rpartition(" ")
        if not days_text.strip():
            raise ValidationError(f"{field}: {item!r}: expected DAYS HH-HH, e.g. Mon-Fri 18-23")
        a, b = _hours(hours_text, field)
        length = (b - a) % 24 or 24
        for day in _days(days_text, field):
            for h in range(length):
                local = (_MONDAY_BIN + day * 24 + a + h) % WEEK_BINS
                bins.add((local - shift) % WEEK_BINS)
    return frozenset(bins)


def format_reserved(bins: frozenset[int]) -> list[str]:
    """UTC ranges, e.g. ``["Mon 18:00-23:00 UTC"]``, for display."""
    out: list[str] = []
    order = [(_MONDAY_BIN + i) % WEEK_BINS for i in range(WEEK_BINS)]
    i = 0
    while i < WEEK_BINS:
        if order[i] not in bins:
            i += 1
            continue
        j = i
        while j + 1 < WEEK_BINS and order[j + 1] in bins:
            j += 1
        day, hour = divmod(i, 24)
        end_day, end_hour = divmod(j + 1, 24)
        tail = (
            f"{end_hour:02d}:00"
            if end_day == day
            else f"{DAYS[end_day % 7].title()} " + (f"{end_hour:02d}:00")
        )
        out.append(f"{DAYS[day].title()} {hour:02d}:00-{tail} UTC")
        i = j + 1
    return out
