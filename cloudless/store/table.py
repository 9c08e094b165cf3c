"""``Table[T]``: a typed collection of records under one key prefix.

Callers never build keys: ``Table(store, "/cloudless/nodes/", codec)`` stores record ``name``
at ``prefix + name``. Values are schema-checked on read: a record that does not decode is a
``DecodeError`` naming its key (``get``) or is reported in ``Listing.errors`` (``list``) and
``TableEvent.error`` (``watch``) so one bad record never crash-loops a reader.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloudless.lib.errors import Conflict, ValidationError
from cloudless.store.codec import Codec, dump, load
from cloudless.store.errors import DecodeError, OutcomeUnknown
from cloudless.store.fence import NO_FENCE, Fence, fenced_txn
from cloudless.store.protocol import Store
from cloudless.store.types import Compare, Delete, EventType, KeyValue, Put

T = TypeVar("T")


@dataclass(frozen=True)
class Record(Generic[T]):
    name: str
    value: T
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class TableListing(Generic[T]):
    records: tuple[Record[T], ...]
    revision: int
    errors: tuple[DecodeError, ...] = ()

    def by_name(self) -> dict[str, Record[T]]:
        return {r.name: r for r in self.records}


@dataclass(frozen=True)
class TableEvent(Generic[T]):
    """A change to one record. ``record`` is ``None`` for deletes and undecodable puts."""

    type: EventType
    name: str
    revision: int
    record: Record[T] | None = None
    error: DecodeError | None = None


def check_name(name: str) -> None:
    if not name or len(name) > 253 or name.startswith("/") or not name.isprintable():
        raise ValidationError(
            f"record name {name!r}: must be 1-253 printable characters, not starting with '/'"
        )


class Table(Generic[T]):
    def __init__(self, store: Store, prefix: str, codec: Codec[T]) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"table prefix {prefix!r} must end with '/'")
        self.store = store
        self.prefix = prefix
        self.codec = codec

    # ---- keys and building blocks for multi-table transactions -----------------------------

    def key(self, name: str) -> str:
        check_name(name)
        return self.prefix + name

    def name_of(self, key: str) -> str:
        return key[len(self.prefix) :]

    def encode(self, value: T) -> bytes:
        return dump(self.codec, value)

    def put_op(self, name: str, value: T, *, lease: int = 0) -> Put:
        return Put(self.key(name), self.encode(value), lease)

    def delete_op(self, name: str) -> Delete:
        return Delete(self.key(name))

    def unchanged(self, name: str, mod_revision: int) -> Compare:
        """Holds iff the record is still at ``mod_revision`` (0: still absent)."""
        return Compare.mod_revision(self.key(name), "==", mod_revision)

    def decode(self, kv: KeyValue) -> Record[T]:
        value = load(self.codec, kv.key, kv.value)
        return Record(
            self.name_of(kv.key), value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
        )

    # ---- reads -----------------------------------------------------------------------------

    async def get(self, name: str) -> Record[T] | None:
        kv = await self.store.get(self.key(name))
        return self.decode(kv) if kv else None

    async def list(self, *, revision: int = 0) -> TableListing[T]:
        listing = await self.store.list(self.prefix, revision=revision)
        records: builtins.list[Record[T]] = []
        errors: builtins.list[DecodeError] = []
        for kv in listing.kvs:
            try:
                records.append(self.decode(kv))
            except DecodeError as e:
                errors.append(e)
        return TableListing(tuple(records), listing.revision, tuple(errors))

    async def watch(self, *, start_revision: int = 0) -> AsyncGenerator[TableEvent[T], None]:
        """Decoded changes from ``start_revision``; raises ``Compacted`` like ``Store.watch``."""
        async with contextlib.aclosing(
            self.store.watch(self.prefix, start_revision=start_revision)
        ) as batches:
            async for batch in batches:
                for e in batch.events:
                    yield self.event(e.type, e.kv)

    def event(self, type: EventType, kv: KeyValue) -> TableEvent[T]:
        name = self.name_of(kv.key)
        if type is EventType.DELETE:
            return TableEvent(type, name, kv.mod_revision)
        try:
            return TableEvent(type, name, kv.mod_revision, record=self.decode(kv))
        except DecodeError as e:
            return TableEvent(type, name, kv.mod_revision, error=e)

    # ---- writes ----------------------------------------------------------------------------

    async def put(self, name: str, value: T, *, lease: int = 0, fence: Fence = NO_FENCE) -> int:
        """Write unconditionally (but fenced); returns the revision."""
        res = await fenced_txn(self.store, fence, (), [self.put_op(name, value, lease=lease)])
        return res.revision

    async def cas(
        self, name: str, value: T, *, expect: int, lease: int = 0, fence: Fence = NO_FENCE
    ) -> int | None:
        """Write iff the record's mod revision is ``expect`` (0: iff absent). Returns the new
        revision, or ``None`` if someone else changed the record first."""
        res = await fenced_txn(
            self.store,
            fence,
            [self.unchanged(name, expect)],
            [self.put_op(name, value, lease=lease)],
        )
        return res.revision if res.succeeded else None

    # etcd refuses transactions of more than 128 compares or operations (``--max-txn-ops``),
    # and the fence adds its own compares.
    MAX_BATCH = 100

    async def cas_many(
        self, items: Sequence[tuple[str, T, int]], *, fence: Fence = NO_FENCE
    ) -> int | None:
        """Write every ``(name, value, expect)`` iff each record is still at its ``expect``
        revision (0: absent), all in one transaction or none. Returns the new revision, or
        ``None`` if any record had changed. At most ``MAX_BATCH`` items."""
        if len(items) > self.MAX_BATCH:
            raise ValueError(f"cas_many: {len(items)} items, at most {self.MAX_BATCH} per call")
        if not items:
            return None
        res = await fenced_txn(
            self.store,
            fence,
            [self.unchanged(name, expect) for name, _, expect in items],
            [self.put_op(name, value) for name, value, _ in items],
        )
        return res.revision if res.succeeded else None

    async def create(self, name: str, value: T, *, lease: int = 0, fence: Fence = NO_FENCE) -> int:
        """Create-if-absent. Raises ``Conflict`` naming the record if it exists."""
        rev = await self.cas(name, value, expect=0, lease=lease, fence=fence)
        if rev is None:
            raise Conflict(f"{self.codec.kind} {name!r} already exists")
        return rev

    async def delete(
        self, name: str, *, expect: int | None = None, fence: Fence = NO_FENCE
    ) -> bool:
        """Delete (iff at mod revision ``expect`` when given). True if a record was deleted."""
        compares = [] if expect is None else [self.unchanged(name, expect)]
        existed = [Compare.version(self.key(name), ">", 0)]
        res = await fenced_txn(self.store, fence, [*compares, *existed], [self.delete_op(name)])
        return res.succeeded

    async def update(
        self,
        name: str,
        change: Callable[[T | None], T | None],
        *,
        fence: Fence = NO_FENCE,
        attempts: int = 16,
    ) -> Record[T] | None:
        """Read-modify-write with compare-and-swap, retried on contention.

        ``change(current)`` returns the new value, or ``None`` to leave the record alone (the
        current record is returned). It must be pure: it may run several times. A lost answer
        (``OutcomeUnknown``) is resolved by re-reading: if the record now holds exactly our
        new value, our write landed and ``change`` is not applied again.
        """
        for _ in range(attempts):
            current = await self.get(name)
            new = change(current.value if current else None)
            if new is None:
                return current
            expect = current.mod_revision if current else 0
            try:
                rev = await self.cas(name, new, expect=expect, fence=fence)
            except OutcomeUnknown:
                # The compare on ``expect`` makes a retry safe (the lost write and the retry
                # cannot both apply); if the lost write did land, do not apply ``change`` twice.
                again = await self.get(name)
                if again is not None and again.mod_revision != expect and again.value == new:
                    return again
                continue
            if rev is not None:
                return Record(
                    name,
                    new,
                    create_revision=current.create_revision if current else rev,
                    mod_revision=rev,
                    version=current.version + 1 if current else 1,
                )
        raise Conflict(
            f"{self.codec.kind} {name!r} changed under us {attempts} times in a row; retry later"
        )
