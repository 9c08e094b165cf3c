"""``within``: a result in time, ``TimeoutError`` (the awaited work cancelled and ended) when
late, no limit for ``None``, and a caller's cancellation that always propagates, even when the
awaited work finishes in the same turn of the loop as the cancel (where ``asyncio.wait_for``
on Python 3.11 returns the result and swallows the cancel). ``ended``: the task's own
cancellation swallowed, the caller's let through, and usable in a caller's cleanup after its
own cancel."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.waits import ended, within


async def value_after(seconds: float, value: object) -> object:
    await asyncio.sleep(seconds)
    return value


async def test_a_result_in_time_is_returned() -> None:
    assert await within(1.0, value_after(0, "ok")) == "ok"
    assert await within(None, value_after(0.01, 7)) == 7


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.01])
async def test_late_work_is_cancelled_and_ended_before_timeout_error(seconds: float) -> None:
    state: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state.append("cancelled")
            raise

    with pytest.raises(TimeoutError):
        await within(seconds, slow())
    assert state == ["cancelled"]


async def test_an_error_of_the_work_is_raised_as_is() -> None:
    async def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await within(1.0, fails())


@pytest.mark.parametrize("inner", ["future", "task"])
async def test_a_cancel_in_the_turn_the_work_finishes_propagates(inner: str) -> None:
    """The race: the awaited work is done and the caller cancelled before either wakes up."""
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[str] = loop.create_future()
    rounds: list[str] = []

    async def wait_gate() -> str:
        return await gate

    async def looping() -> None:
        while True:
            aw = gate if inner == "future" else wait_gate()
            rounds.append(await within(5.0, aw))
            await asyncio.sleep(3600)

    task = asyncio.create_task(looping())
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set_result("done")
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}, "the cancel was swallowed: the task went on to its next sleep"
    assert task.cancelled()


async def test_ended_cancels_and_waits_for_the_task() -> None:
    steps: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # cleanup that takes a while
            steps.append("cleaned up")
            raise

    t = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await ended(t)
    assert t.cancelled() and steps == ["cleaned up"]
    await ended(t)  # a task already ended: nothing to do


async def test_ended_raises_the_tasks_own_error() -> None:
    async def fails() -> None:
        raise KeyError("boom")

    t = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(KeyError):
        await ended(t)


async def test_ended_lets_a_cancel_of_the_caller_through() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()
            raise

    after: list[str] = []

    async def caller() -> None:
        t = asyncio.create_task(stubborn())
        await asyncio.sleep(0)  # it has started
        await ended(t)
        after.append("went on")

    c = asyncio.create_task(caller())
    for _ in range(3):
        await asyncio.sleep(0)
    c.cancel()
    release.set()
    done, _ = await asyncio.wait([c], timeout=2)
    assert done == {c} and c.cancelled() and after == []


async def test_ended_in_the_cleanup_of_a_cancelled_caller_does_not_cut_it_short() -> None:
    steps: list[str] = []

    async def caller() -> None:
        t = asyncio.create_task(asyncio.sleep(10))
        try:
            await asyncio.sleep(10)
        finally:
            await ended(t)
            steps.append("rest of the cleanup")

    c = asyncio.create_task(caller())
    await asyncio.sleep(0)
    c.cancel()
    await asyncio.gather(c, return_exceptions=True)
    assert c.cancelled() and steps == ["rest of the cleanup"]
