"""The simulation's clock, its error type and a store connection that can be cut."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from cloudless.lib.clock import FakeClock
from cloudless.store.errors import StoreError
from cloudless.store.memory import MemoryStore
from cloudless.store.types import (
    Compare,
    KeyListing,
    Lease,
    Listing,
    TxnOp,
    TxnResult,
    WatchBatch,
)


class SimClock(FakeClock):
    """A ``FakeClock`` that can say when its next sleeper is due, so the harness can step
    exactly to each deadline instead of quantizing every timer to its step."""

    def next_deadline(self) -> float | None:
        heap = self._sleepers
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def wake(self, seconds: float, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` after ``seconds`` unless something else resolves it first (a
        sleep that another event can cut short, without a task per sleep)."""
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))


class SimError(AssertionError):
    """A scenario expectation failed; the message carries the cluster picture."""


class GatedStore:
    """A brain's connection to the shared store; ``cut`` makes every call fail like a lost
    network path (the brain cannot renew its lease, so it lapses after the TTL)."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise StoreError("store unreachable (simulated cut)")

    async def get(self, key: str) -> Any:
        self._check()
        return await self.inner.get(key)

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        self._check()
        return await self.inner.list(prefix, revision=revision)

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        self._check()
        return await self.inner.keys(prefix, limit=limit)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check()
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self._check()
        return await self.inner.delete(key, prefix=prefix)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        self._check()
        return await self.inner.txn(compares, success, failure)

    async def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        self._check()
        async with contextlib.aclosing(
            self.inner.watch(prefix, start_revision=start_revision, prev_kv=prev_kv)
        ) as batches:
            async for batch in batches:
                self._check()
                yield batch

    async def grant_lease(self, ttl: int) -> Lease:
        self._check()
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease_id: int) -> int:
        self._check()
        return await self.inner.keepalive(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        self._check()
        await self.inner.revoke_lease(lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        self._check()
        return await self.inner.lease_ttl(lease_id)

    async def compact(self, revision: int) -> None:
        self._check()
        await self.inner.compact(revision)

    async def revision(self) -> int:
        self._check()
        return await self.inner.revision()

    async def close(self) -> None:
        return None
