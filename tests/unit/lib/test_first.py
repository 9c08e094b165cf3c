"""``first_of``: the first to finish wins (lowest index on a tie), the rest are cancelled and
awaited, the winner's exception is raised, and a cancelled caller leaves nothing running."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.lib.first import first_of


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class Tracked:
    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def wait(self, name: str, event: asyncio.Event, value: object = None) -> object:
        try:
            await event.wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        return value


async def test_the_first_wins_and_the_others_are_cancelled_and_awaited() -> None:
    t = Tracked()
    a, b, c = asyncio.Event(), asyncio.Event(), asyncio.Event()
    b.set()
    assert await first_of(t.wait("a", a), t.wait("b", b, "B"), t.wait("c", c)) == (1, "B")
    assert sorted(t.cancelled) == ["a", "c"]  # both ended before first_of returned


async def test_a_tie_goes_to_the_lowest_index() -> None:
    ev = asyncio.Event()
    ev.set()
    assert await first_of(ev.wait(), ev.wait()) == (0, True)


async def test_the_winners_exception_is_raised() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await first_of(boom(), asyncio.Event().wait())


async def test_a_losers_exception_is_swallowed() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("in clean-up")

    ev = asyncio.Event()
    ev.set()
    assert await first_of(ev.wait(), fails_when_cancelled()) == (0, True)


async def test_a_timeout_on_the_fake_clock() -> None:
    clock = FakeClock()
    t = Tracked()
    race = asyncio.ensure_future(first_of(t.wait("work", asyncio.Event()), clock.sleep(5)))
    await turns()  # the sleep is registered at 0 s
    clock.advance(4.9)  # 4.9 s < 5 s: still waiting
    await turns()
    assert not race.done()
    clock.advance(0.1)  # 5 s: the timer wins, the work is cancelled
    assert await race == (1, None)
    assert t.cancelled == ["work"]


async def test_cancelling_the_caller_cancels_them_all() -> None:
    t = Tracked()
    race = asyncio.ensure_future(
        first_of(t.wait("a", asyncio.Event()), t.wait("b", asyncio.Event()))
    )
    await turns()
    race.cancel()
    with pytest.raises(asyncio.CancelledError):
        await race
    assert sorted(t.cancelled) == ["a", "b"]


async def test_nothing_to_wait_for_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        await first_of()
