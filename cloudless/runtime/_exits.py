"""Fan-out of container exits to any number of subscribers (used by both runtimes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cloudless.runtime.types import ContainerExit


class ExitBroadcaster:
    """``publish`` never blocks; each subscriber has its own unbounded queue.

    A subscription lives from the ``subscribe()`` call (not the first ``__anext__``) until its
    iterator is closed, so an exit published right after subscribing is never missed.
    """

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[ContainerExit]] = set()

    def publish(self, exit_: ContainerExit) -> None:
        for q in self._queues:
            q.put_nowait(exit_)

    def subscribe(self) -> AsyncIterator[ContainerExit]:
        q: asyncio.Queue[ContainerExit] = asyncio.Queue()
        self._queues.add(q)
        return self._drain(q)

    async def _drain(self, q: asyncio.Queue[ContainerExit]) -> AsyncIterator[ContainerExit]:
        try:
            while True:
                yield await q.get()
        finally:
            self._queues.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._queues)
