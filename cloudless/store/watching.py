"""Watching a prefix without ever missing a change: resume, and re-list after compaction.

``watch_with_resync(store, prefix)`` yields a ``Resync`` (the full state at a revision, which
replaces whatever the reader had) and then ``Changes`` in revision order. If the resume point
has been compacted away it yields a fresh ``Resync`` and carries on from there. Readers build
their view as: on ``Resync`` replace, on ``Changes`` apply. Pass ``start_revision`` (the
revision after the last thing you applied) to skip the initial listing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Generic, TypeVar

from cloudless.store.errors import Compacted, DecodeError
from cloudless.store.protocol import Store
from cloudless.store.table import Record, Table, TableEvent, TableListing
from cloudless.store.types import Event, KeyValue

T = TypeVar("T")


@dataclass(frozen=True)
class Resync:
    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True)
class Changes:
    events: tuple[Event, ...]
    revision: int


async def watch_with_resync(
    store: Store, prefix: str, *, start_revision: int = 0
) -> AsyncGenerator[Resync | Changes, None]:
    rev = start_revision
    while True:
        if rev == 0:
            listing = await store.list(prefix)
            yield Resync(listing.kvs, listing.revision)
            rev = listing.revision + 1
        try:
            async with contextlib.aclosing(store.watch(prefix, start_revision=rev)) as batches:
                async for batch in batches:
                    rev = batch.events[-1].revision + 1
                    yield Changes(batch.events, batch.revision)
            return  # the store closed the watch
        except Compacted:
            rev = 0


@dataclass(frozen=True)
class TableResync(Generic[T]):
    listing: TableListing[T]


@dataclass(frozen=True)
class TableChanges(Generic[T]):
    events: tuple[TableEvent[T], ...]
    revision: int


async def watch_table(
    table: Table[T], *, start_revision: int = 0
) -> AsyncGenerator[TableResync[T] | TableChanges[T], None]:
    """``watch_with_resync`` for a table: decoded records (bad ones reported, not fatal)."""
    async with contextlib.aclosing(
        watch_with_resync(table.store, table.prefix, start_revision=start_revision)
    ) as items:
        async for item in items:
            if isinstance(item, Resync):
                yield TableResync(_decode(table, item))
            else:
                events = tuple(table.event(e.type, e.kv) for e in item.events)
                yield TableChanges(events, item.revision)


def _decode(table: Table[T], item: Resync) -> TableListing[T]:
    records: list[Record[T]] = []
    errors: list[DecodeError] = []
    for kv in item.kvs:
        try:
            records.append(table.decode(kv))
        except DecodeError as e:
            errors.append(e)
    return TableListing(tuple(records), item.revision, tuple(errors))
