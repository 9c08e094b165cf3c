"""The probe state machine: results in, verdicts out. No clock, no I/O.

Rules (one ``ProbeState`` per check per container incarnation):

1. A check starts ``unknown`` and its first probe is due at the container's start time;
   after each result the next is due one ``interval_s`` later (``next_at``).
2. A pass adds to the run of consecutive passes and clears the run of failures; after
   ``success_threshold`` passes in a row the verdict becomes ``passing``.
3. A failure clears the run of passes; it adds to the run of failures only once the start
   grace is over (``at >= started_at + start_grace_s``): a slow starter is not judged on
   results it was given time to fix. After ``failure_threshold`` counted failures in a row the
   verdict becomes ``failing``.
4. A verdict only changes by rules 2 and 3, so one stray result never flips a check whose
   thresholds are above 1.

Readiness: the replica is ready only while the verdict is ``passing``. Liveness: ``unknown``
and ``passing`` are alive; ``failing`` means restart (the caller starts a fresh state for the
next incarnation).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from cloudless.model.health import Probe


class Verdict(enum.StrEnum):
    UNKNOWN = "unknown"
    PASSING = "passing"
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class ProbeState:
    started_at: float
    next_at: float
    verdict: Verdict = Verdict.UNKNOWN
    passes: int = 0  # consecutive
    failures: int = 0  # consecutive, counted after the start grace only
    detail: str = ""  # the last result, in words


def start(started_at: float) -> ProbeState:
    """The state of a check for a container that started at ``started_at``."""
    return ProbeState(started_at=started_at, next_at=started_at)


def due(state: ProbeState, now: float) -> bool:
    return now >= state.next_at


def observe(
    state: ProbeState, probe: Probe, at: float, ok: bool, detail: str = ""
) -> tuple[ProbeState, Verdict | None]:
    """Apply one result taken at ``at``; return the new state and the new verdict if it
    changed (else ``None``)."""
    if ok:
        passes, failures = state.passes + 1, 0
    else:
        in_grace = at < state.started_at + probe.start_grace_s
        passes, failures = 0, state.failures + (0 if in_grace else 1)
    verdict = state.verdict
    if passes >= probe.success_threshold:
        verdict = Verdict.PASSING
    elif failures >= probe.failure_threshold:
        verdict = Verdict.FAILING
    new = replace(
        state,
        next_at=at + probe.interval_s,
        verdict=verdict,
        passes=passes,
        failures=failures,
        detail=detail,
    )
    return new, (verdict if verdict is not state.verdict else None)


def ready(state: ProbeState | None) -> bool:
    """Readiness: no check means ready; a check means ready only while passing."""
    return state is None or state.verdict is Verdict.PASSING


def alive(state: ProbeState | None) -> bool:
    """Liveness: only a failing check says the container must be restarted."""
    return state is None or state.verdict is not Verdict.FAILING
