"""Injected time.

Every component that needs time takes a ``Clock``. Production uses ``SystemClock``; tests use
``FakeClock`` and advance it instead of sleeping. ``now()`` is wall-clock seconds since the
epoch (for certificates, tokens, timestamps users see); ``monotonic()`` is for durations and
timers. ``sleep`` on the fake returns when the fake time has been advanced far enough.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


def utc(ts: float) -> dt.datetime:
    """A wall-clock timestamp as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told to.

    ``advance(dt)`` moves both wall and monotonic time and wakes every sleeper whose deadline
    has passed, in deadline order. Sleepers must be awaited on a running loop.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._wall += seconds
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def run_for(self, seconds: float, step: float = 0.1) -> None:
        """Advance in steps, letting the loop run between them (simulation helper)."""
        end = self._mono + seconds
        while self._mono < end - 1e-12:
            self.advance(min(step, end - self._mono))
            for _ in range(5):
                await asyncio.sleep(0)

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
