"""Waits that never swallow the caller's cancellation.

* ``within(seconds, aw)``: await ``aw`` for at most ``seconds`` of loop time (``None``: no
  limit). It returns what ``aw`` returns, or raises ``TimeoutError`` once ``aw``, awaited in
  the caller's own task, has been cancelled and has ended. The one way Cloudless puts a time
  limit on an await: ``asyncio.wait_for`` on Python 3.11 returns the result when ``aw``
  finishes in the same turn of the loop as a cancel of the caller, swallowing the cancel
  (CPython gh-86296), so a long-lived task looping on it can outlive its ``cancel()`` for
  good. Ruff bans ``asyncio.wait_for`` in ``cloudless/`` (TID251).
* ``ended(task)``: cancel ``task`` and wait until it has ended. Its own cancellation is
  swallowed; a cancel of the caller that arrives meanwhile is not (``suppress(CancelledError)``
  around the await would swallow both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(seconds: float | None, aw: Awaitable[T]) -> T:
    async with asyncio.timeout(seconds):
        return await aw


async def ended(task: asyncio.Future[Any]) -> None:
    me = asyncio.current_task()
    asked = me.cancelling() if me is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if me is not None and me.cancelling() > asked:
            raise
