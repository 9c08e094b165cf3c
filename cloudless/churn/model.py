"""A device's availability, learned from its own history: small and explainable.

Rules:

* time is cut into the 168 hours of the week (hour 0 = the hour-of-week of epoch 0); for
  each hour bin the model keeps the online seconds and the observed seconds seen in that
  bin, each weighted by ``0.5 ** (age / half_life_s)`` (recent weeks count more);
* ``p_online(t)`` for the bin of ``t`` is ``(online + prior * prior_s) / (observed +
  prior_s)``: a bin never observed answers the prior, one observed for long answers what
  was seen;
* departures: sessions that ended (not the one still open) per online second, with the same
  decay, give a rate ``lam``. ``p_stay(h)`` is the chance a device online now stays up ``h``
  more seconds: from its own ended sessions, the (decayed) share of those that lasted at
  least ``age + h`` among those that lasted at least ``age``, ``age`` being how long the
  open session has lasted (sessions on home devices are heavy-tailed: one that has lasted
  long tends to go on); with less than ``MIN_SESSIONS`` such sessions, ``exp(-lam * h)``;
* ``availability(start, horizon)``: the mean ``p_online`` over the hours of the window;
  ``staying(start, horizon)``: per hour, the chance a device online now has not left yet.

Sessions are ``(start, end)`` online periods, in seconds, sorted and not overlapping; an
open session ends at ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cloudless.lib.errors import ValidationError

HOUR_S = 3600.0
MIN_SESSIONS = 3.0
WEEK_BINS = 168
WEEK_S = HOUR_S * WEEK_BINS


def hour_of_week(t: float) -> int:
    return int((t % WEEK_S) // HOUR_S)


@dataclass(frozen=True, slots=True)
class AvailabilityModel:
    p: tuple[float, ...]  # online probability per hour of the week (168)
    lam: float  # departures per online second
    observed_s: float  # seconds of history behind the model (before decay)
    ended: tuple[tuple[float, float], ...] = ()  # (length, decay weight) of ended sessions
    age_s: float = 0.0  # how long the open session has lasted (0 when offline)

    @classmethod
    def learn(
        cls,
        sessions: Sequence[tuple[float, float]],
        since: float,
        now: float,
        *,
        half_life_s: float = 14 * 86400.0,
        prior: float = 0.5,
        prior_s: float = 600.0,
    ) -> AvailabilityModel:
        """The model of a device observed from ``since`` to ``now`` with these online
        ``sessions``. Raises ValidationError for a window or session that makes no sense."""
        if not now >= since:
            raise ValidationError(f"history: now ({now}) is before since ({since})")
        if half_life_s <= 0 or prior_s < 0 or not 0.0 <= prior <= 1.0:
            raise ValidationError("model: half_life_s > 0, prior_s >= 0, 0 <= prior <= 1")
        on = [0.0] * WEEK_BINS
        seen = [0.0] * WEEK_BINS
        k = math.log(2.0) / half_life_s
        t = since
        while t < now:  # observed time, hour slot by hour slot
            end = min(now, (math.floor(t / HOUR_S) + 1) * HOUR_S)
            w = math.exp(-k * (now - (t + end) / 2.0))
            seen[hour_of_week(t)] += w * (end - t)
            t = end
        online_w = departures = 0.0
        ended: list[tuple[float, float]] = []
        age = 0.0
        last_end = -math.inf
        for s, e in sessions:
            if e < s or s < last_end:
                raise ValidationError(f"history: session ({s}, {e}) is reversed or overlaps")
            last_end = e
            s, e = max(s, since), min(e, now)
            t = s
            while t < e:
                end = min(e, (math.floor(t / HOUR_S) + 1) * HOUR_S)
                w = math.exp(-k * (now - (t + end) / 2.0))
                on[hour_of_week(t)] += w * (end - t)
                online_w += w * (end - t)
                t = end
            if s <= e < now:
                departures += math.exp(-k * (now - e))
                ended.append((e - s, math.exp(-k * (now - e))))
            elif e >= now > s:
                age = now - s
        p = tuple(
            (on[h] + prior * prior_s) / (seen[h] + prior_s) if seen[h] + prior_s > 0 else prior
            for h in range(WEEK_BINS)
        )
        lam = departures / online_w if online_w > 0 else 1.0 / HOUR_S
        return cls(p, lam, now - since, tuple(ended), age)

    def p_online(self, t: float) -> float:
        return self.p[hour_of_week(t)]

    def p_stay(self, horizon_s: float) -> float:
        h = max(0.0, horizon_s)
        alive = sum(w for length, w in self.ended if length >= self.age_s)
        if alive < MIN_SESSIONS:
            return math.exp(-self.lam * h)
        last = sum(w for length, w in self.ended if length >= self.age_s + h)
        return last / alive

    def window(self, start: float, horizon_s: float) -> list[float]:
        """``p_online`` for each hour of ``[start, start + horizon_s)`` (at least one)."""
        n = max(1, math.ceil(horizon_s / HOUR_S))
        return [self.p_online(start + i * HOUR_S) for i in range(n)]

    def staying(self, start: float, horizon_s: float) -> list[float]:
        """For each hour ``h`` of the window, the chance that a device online at ``start``
        is still in that session: ``p_stay(h)`` times the lowest ``p_online`` up to ``h``
        (a device that is usually gone by some hour has most likely left by then)."""
        out, low = [], 1.0
        for i, p in enumerate(self.window(start, horizon_s)):
            low = min(low, p)
            out.append(self.p_stay(i * HOUR_S) * low)
        return out

    def availability(self, start: float, horizon_s: float) -> float:
        w = self.window(start, horizon_s)
        return sum(w) / len(w)

    def mean_session_s(self) -> float:
        return 1.0 / self.lam if self.lam > 0 else math.inf

    def describe(self, now: float) -> dict[str, float]:
        """What ``cloudless describe node`` shows: week mean, now, next 24 h, sessions."""
        return {
            "availability_week": sum(self.p) / WEEK_BINS,
            "p_online_now": self.p_online(now),
            "availability_next_24h": self.availability(now, 86400.0),
            "mean_session_h": self.mean_session_s() / HOUR_S,
            "p_stay_up_next_1h": self.p_stay(HOUR_S),
            "history_h": self.observed_s / HOUR_S,
        }
