"""A ``MemoryStore`` with a breakable, holdable read link, for the view and reconciler tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from cloudless.lib.clock import FakeClock
from cloudless.store.errors import StoreError
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Listing, WatchBatch


class TestStore(MemoryStore):
    """A ``MemoryStore`` whose read link can go down (every list/watch fails, a running
    watch breaks at its next batch; writes still work), whose watch can be held back, and
    which counts listings."""

    __test__ = False

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.down = False
        self.lists = 0
        self.released = asyncio.Event()
        self.released.set()
        self.during_list: Callable[[str], Awaitable[None]] | None = None

    def _check(self) -> None:
        if self.down:
            raise StoreError("store unreachable (test link down)")

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        self._check()
        self.lists += 1
        if self.during_list is not None:
            await self.during_list(prefix)
        return await super().list(prefix, revision=revision)

    async def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        self._check()
        async with contextlib.aclosing(
            super().watch(prefix, start_revision=start_revision, prev_kv=prev_kv)
        ) as batches:
            async for batch in batches:
                await self.released.wait()
                self._check()
                yield batch
