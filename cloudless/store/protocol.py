"""The ``Store`` seam: a linearizable, revisioned key-value store with leases and watches.

Two implementations pass one contract suite (``tests/contract/store``):
``MemoryStore`` (in-process, injected clock) and ``EtcdStore`` (etcd v3 over mTLS).

Keys are text, values are bytes. Higher layers never build keys by hand: they use ``Table``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

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


class Store(Protocol):
    async def get(self, key: str) -> KeyValue | None:
        """The key's current value, or ``None`` if absent. Linearizable."""
        ...

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        """Every key starting with ``prefix`` (sorted), as of ``revision`` (0 = now); the
        listing's ``revision`` is the one it reflects. Consistent even when paged.

        Raises ``Compacted`` if ``revision`` is older than the compaction point.
        """
        ...

    async def keys(self, prefix: str, *, limit: int) -> KeyListing:
        """The first ``limit`` keys starting with ``prefix`` (sorted, no values) and how many
        there are in all, in one read of now: a bounded look at a table of any size."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write unconditionally; returns the new store revision. ``lease=0``: no lease.

        Raises ``LeaseNotFound`` if ``lease`` is not alive, ``OutcomeUnknown`` on timeout.
        """
        ...

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it with ``prefix=True``); returns how many."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        """Atomically: if every compare holds run ``success`` else ``failure``, at one revision.

        Sent exactly once: a lost answer raises ``OutcomeUnknown`` (never retried blindly).
        """
        ...

    def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        """Changes to keys under ``prefix`` from ``start_revision`` (0 = from now on), in
        revision order, each exactly once, surviving reconnects.

        Raises ``Compacted`` when ``start_revision`` (or the resume point after a reconnect) is
        older than the compaction point. Close with ``contextlib.aclosing`` or by breaking out.
        """
        ...

    async def grant_lease(self, ttl: int) -> Lease:
        """A new lease living ``ttl`` seconds unless kept alive (etcd may raise short TTLs)."""
        ...

    async def keepalive(self, lease_id: int) -> int:
        """Renew the lease once; returns its TTL. Raises ``LeaseNotFound`` if it is gone."""
        ...

    async def revoke_lease(self, lease_id: int) -> None:
        """End the lease now, deleting every key attached to it. Idempotent."""
        ...

    async def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on the lease, or -1 if it does not exist."""
        ...

    async def compact(self, revision: int) -> None:
        """Drop history at and before ``revision`` (watches/reads there raise ``Compacted``)."""
        ...

    async def revision(self) -> int:
        """The store's current revision."""
        ...

    async def close(self) -> None: ...
