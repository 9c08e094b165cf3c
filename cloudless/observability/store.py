"""``MeasuredStore``: the ``Store`` seam with every request timed and every failure counted.

A transparent wrapper: same contract, same errors, same results; anything beyond the
``Store`` protocol (the etcd store's lease keeper, the memory store's fault injection) is
passed through untouched. Watches are not timed (they live for hours); their failures show
up as the errors of the reads that follow.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from cloudless.observability.metrics import STORE_DURATION, STORE_ERRORS
from cloudless.store.protocol import Store
from cloudless.store.types import (
    Compare,
    KeyListing,
    KeyValue,
    Lease,
    Listing,
    TxnOp,
    TxnResult,
    WatchBatch,
)

T = TypeVar("T")


def unwrapped(store: Store) -> Store:
    """The store a ``MeasuredStore`` wraps (or ``store`` itself): for code that needs the
    concrete implementation (etcd member administration)."""
    return store.inner if isinstance(store, MeasuredStore) else store


class MeasuredStore:
    def __init__(self, inner: Store, *, timer: Callable[[], float] = time.perf_counter) -> None:
        self.inner = inner
        self._timer = timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def _measure(self, op: str, call: Awaitable[T]) -> T:
        t0 = self._timer()
        try:
            return await call
        except Exception as e:
            STORE_ERRORS.labels(op, type(e).__name__).inc()
            raise
        finally:
            STORE_DURATION.labels(op).observe(self._timer() - t0)

    async def get(self, key: str) -> KeyValue | None:
        return await self._measure("get", self.inner.get(key))

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        return await self._measure("list", self.inner.list(prefix, revision=revision))

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        return await self._measure("keys", self.inner.keys(prefix, limit=limit))

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        return await self._measure("put", self.inner.put(key, value, lease=lease))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        return await self._measure("delete", self.inner.delete(key, prefix=prefix))

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        return await self._measure("txn", self.inner.txn(compares, success, failure))

    def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        return self.inner.watch(prefix, start_revision=start_revision, prev_kv=prev_kv)

    async def grant_lease(self, ttl: int) -> Lease:
        return await self._measure("grant_lease", self.inner.grant_lease(ttl))

    async def keepalive(self, lease_id: int) -> int:
        return await self._measure("keepalive", self.inner.keepalive(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._measure("revoke_lease", self.inner.revoke_lease(lease_id))

    async def lease_ttl(self, lease_id: int) -> int:
        return await self._measure("lease_ttl", self.inner.lease_ttl(lease_id))

    async def compact(self, revision: int) -> None:
        await self._measure("compact", self.inner.compact(revision))

    async def revision(self) -> int:
        return await self._measure("revision", self.inner.revision())

    async def close(self) -> None:
        await self.inner.close()
