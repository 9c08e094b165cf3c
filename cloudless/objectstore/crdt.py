"""Last-writer-wins registers: the metadata tables' only conflict rule.

An ``Entry`` is one row's state: ``(timestamp, writer, value)`` with ``value=None`` a
tombstone. ``merge`` keeps the greater entry under one total order (``outranks``: timestamp,
then writer, then tombstone-last, then whether the value is intact (``records.intact``),
then value bytes), so merging is commutative, associative and idempotent: replicas that saw
the same entries in any order, any number of times, agree. Two different values of one
(timestamp, writer) are one write, one copy of it damaged where it was stored: the intact
copy wins, so read repair and anti-entropy mend the damaged replica instead of spreading it.

Timestamps are integer milliseconds; a local writer stamps ``next_timestamp(now, previous)``
= ``max(now, previous + 1)``, so a write always supersedes the one it read, even when this
node's clock is behind the previous writer's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudless.objectstore.records import intact


@dataclass(frozen=True)
class Entry:
    timestamp: int
    writer: str
    value: bytes | None

    @property
    def deleted(self) -> bool:
        return self.value is None


def outranks(a: Entry, b: Entry) -> bool:
    """Whether ``a`` is greater than ``b`` in the merge order. The intactness of the values
    is looked at only when everything before it ties (a rare case), so a merge costs no
    MD5."""
    if a.timestamp != b.timestamp:
        return a.timestamp > b.timestamp
    if a.writer != b.writer:
        return a.writer > b.writer
    if a.value is None or b.value is None:
        return b.value is None and a.value is not None  # a value outranks a tombstone
    if a.value == b.value:
        return False
    whole_a, whole_b = intact(a.value), intact(b.value)
    if whole_a != whole_b:
        return whole_a
    return a.value > b.value


def same_write(a: Entry, b: Entry) -> bool:
    """Whether ``a`` and ``b`` are copies of one write (equal but for the value's bytes)."""
    return (a.timestamp, a.writer, a.deleted) == (b.timestamp, b.writer, b.deleted)


def merge(current: Entry | None, incoming: Entry) -> Entry:
    """The winner of two states of one row."""
    if current is None or outranks(incoming, current):
        return incoming
    return current


def next_timestamp(now_ms: int, previous: Entry | None) -> int:
    """The timestamp for a local write over ``previous``: ``max(now, previous + 1)``."""
    return now_ms if previous is None else max(now_ms, previous.timestamp + 1)
