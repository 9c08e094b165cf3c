"""Last-writer-wins registers: the metadata tables' only conflict rule.

An ``Entry`` is one row's state: ``(timestamp, writer, value)`` with ``value=None`` a
tombstone. ``merge`` keeps the greater entry under one total order (timestamp, then writer,
then tombstone-last, then value bytes), so merging is commutative, associative and idempotent:
replicas that saw the same entries in any order, any number of times, agree.

Timestamps are integer milliseconds; a local writer stamps ``next_timestamp(now, previous)``
= ``max(now, previous + 1)``, so a write always supersedes the one it read, even when this
node's clock is behind the previous writer's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    timestamp: int
    writer: str
    value: bytes | None

    @property
    def deleted(self) -> bool:
        return self.value is None

    def order(self) -> tuple[int, str, int, bytes]:
        return (self.timestamp, self.writer, 0 if self.value is None else 1, self.value or b"")


def merge(current: Entry | None, incoming: Entry) -> Entry:
    """The winner of two states of one row."""
    if current is None or incoming.order() > current.order():
        return incoming
    return current


def next_timestamp(now_ms: int, previous: Entry | None) -> int:
    """The timestamp for a local write over ``previous``: ``max(now, previous + 1)``."""
    return now_ms if previous is None else max(now_ms, previous.timestamp + 1)
