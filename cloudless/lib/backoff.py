"""Exponential backoff with full jitter, as a pure value object.

``Backoff.delay(attempt, rng)`` is the wait before retry number ``attempt`` (0-based):
uniform in [base*factor^attempt * (1-jitter), base*factor^attempt], capped at ``cap``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base: float = 0.2
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base or not 0 <= self.jitter <= 1:
            raise ValueError(f"invalid backoff {self}")

    def ceiling(self, attempt: int) -> float:
        return float(min(self.cap, self.base * self.factor ** max(0, attempt)))

    def delay(self, attempt: int, rng: random.Random) -> float:
        top = self.ceiling(attempt)
        return top * (1 - self.jitter * rng.random())
