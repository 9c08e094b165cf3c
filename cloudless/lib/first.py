"""``first_of``: wait for the first of several awaitables, and leave nothing running behind.

``first_of(a, b, ...)`` runs its arguments concurrently until one finishes, cancels the
others and waits until they have ended (a loser's own exception or cancellation is
swallowed), then returns ``(index, result)`` of the one that finished, raising its
exception if it raised. When several finish in the same turn of the loop, the lowest index
wins, so callers list the outcome that should take precedence first. Cancelling the caller
cancels them all and waits for them the same way. A timeout on the injected clock is
``first_of(work, clock.sleep(seconds))``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_of(*aws: Awaitable[Any]) -> tuple[int, Any]:
    if not aws:
        raise ValueError("first_of needs at least one awaitable")
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = min(i for i, t in enumerate(tasks) if t in done)
    return first, tasks[first].result()
