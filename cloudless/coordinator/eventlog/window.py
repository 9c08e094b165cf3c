"""Which events fall outside the window: a pure decision over names, times, bounds and now."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EventBounds:
    """The window of events the cluster keeps (``CoordinatorConfig.events``).

    An event is kept while it is among the newest ``max_count`` *and* younger than
    ``max_age_s``. The leader enforces this every ``interval_s`` seconds, deleting at most
    ``batch`` events per transaction, so between two passes the table can hold up to
    ``max_count`` plus what was written in one interval.
    """

    max_count: int = 10_000
    max_age_s: float = 7 * 24 * 3600.0
    interval_s: float = 10.0
    batch: int = 100  # etcd refuses transactions of more than 128 operations

    def __post_init__(self) -> None:
        problems = []
        if self.max_count < 1:
            problems.append(f"max_count {self.max_count}: keep at least 1 event")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            problems.append(f"max_age_s {self.max_age_s}: must be a positive number of seconds")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            problems.append(f"interval_s {self.interval_s}: must be a positive number of seconds")
        if not 1 <= self.batch <= 100:
            problems.append(f"batch {self.batch}: must be 1-100 deletes per transaction")
        if problems:
            raise ValueError("event bounds: " + "; ".join(problems))


def event_time(name: str) -> float:
    """An event's time from its record name (``cloudless.coordinator.state.cluster.event`` names an
    event by its time in microseconds, zero-padded to 20 digits). A name not in that form
    is not an event this cluster wrote: it counts as infinitely old, so it is deleted when a
    pass sees it."""
    head = name[:20]
    if len(head) == 20 and head.isdigit():
        return int(head) / 1e6
    return -math.inf


def outside_window(
    oldest: Sequence[tuple[float, str]], total: int, bounds: EventBounds, now: float
) -> list[str]:
    """Which of the ``oldest`` events of a table of ``total`` to delete, oldest first: every
    one older than ``now - max_age_s``, and the oldest ones beyond ``max_count``.

    ``oldest`` are ``(time, name)`` pairs, in any order, of the table's oldest events (all
    of them, or its first keys: event names sort by time); ties in time are broken by name.
    Deciding on the oldest slice only is exact: whatever lies beyond it is newer."""
    ordered = sorted(oldest)
    excess = total - bounds.max_count
    cutoff = now - bounds.max_age_s
    doomed: list[str] = []
    for i, (at, name) in enumerate(ordered):
        if i >= excess and at >= cutoff:
            break  # everything after is at least as new, and within the count
        doomed.append(name)
    return doomed
