"""Reading the event log: ``GET /v1/events`` as a pure query over records, plus the watch.

Events are ordered by their *position*: the store revision that wrote them (events are never
rewritten) and, within one revision (a transaction may write several events), their name.
Each event a reader gets carries its ``revision`` and ``id`` (its name). A reader resumes
from a position: exactly the matching events after it, none twice, none skipped, for as long
as they are inside the window (``EventBounds``).

* no position: the newest ``tail`` matching events, oldest first.
* ``since=R``: the matching events written after revision ``R``; ``continue=TOKEN``: those
  after the position ``TOKEN`` (``R`` or ``R:ID``, as ``Page.next`` and the
  ``Cloudless-Continue`` header give it). Oldest first, at most ``limit``.
* ``follow``: after the page, every matching event as it is written (``feed``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.store.errors import Compacted
from cloudless.store.table import Table, check_name
from cloudless.store.types import EventType

OBJECT_FIELDS = ("node", "workload", "replica")
CONTINUE_HEADER = "Cloudless-Continue"  # the position to pass as ``continue`` next
MORE_HEADER = "Cloudless-More"  # "1" when a page stopped at its limit
DEFAULT_TAIL = 50
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_KINDS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_WORDS = re.compile(r"[\s:,;()]+")

Body = dict[str, Any]
Entry = tuple[int, str, Body]  # revision, name, body


@dataclass(frozen=True)
class Position:
    """After every event of ``revision`` (``name`` None), or after event ``name`` of it."""

    revision: int
    name: str | None = None

    def precedes(self, revision: int, name: str) -> bool:
        """Whether the event at (``revision``, ``name``) comes after this position."""
        if revision != self.revision:
            return revision > self.revision
        return self.name is not None and name > self.name

    @property
    def token(self) -> str:
        return str(self.revision) if self.name is None else f"{self.revision}:{self.name}"

    @classmethod
    def parse(cls, raw: str, what: str) -> Position:
        rev, sep, name = raw.partition(":")
        if not _is_count(rev, 19):
            raise ValidationError(
                f"query.{what}: {raw[:40]!r} is not a position (REVISION or REVISION:ID, as "
                "the Cloudless-Continue header gives it)"
            )
        if not sep:
            return cls(int(rev))
        try:
            check_name(name)
        except ValidationError:
            raise ValidationError(f"query.{what}: {raw[:40]!r} names no event") from None
        return cls(int(rev), name)


@dataclass(frozen=True)
class EventQuery:
    after: Position | None = None
    kind: str | None = None
    object: str | None = None
    limit: int = DEFAULT_LIMIT
    tail: int = DEFAULT_TAIL
    follow: bool = False

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> EventQuery:
        """From query parameters; a bad one is a ``ValidationError`` naming it."""
        since = q.get("since")
        if since is not None and not _is_count(since, 19):
            raise ValidationError(
                f"query.since: {since[:40]!r} is not a store revision (0 or more)"
            )
        token = q.get("continue")
        if since is not None and token is not None:
            raise ValidationError("query.continue: pass since or continue, not both")
        after = Position(int(since)) if since is not None else None
        if token is not None:
            after = Position.parse(token, "continue")
        kind = q.get("kind")
        if kind is not None and not _KINDS.match(kind):
            raise ValidationError(
                f"query.kind: {kind[:40]!r} is not an event kind (e.g. node, workload, security)"
            )
        obj = q.get("object")
        if obj is not None and not (0 < len(obj) <= 300 and obj.isprintable()):
            raise ValidationError(
                "query.object: expected KIND/NAME (node/ID, workload/NAME, replica/ID) or a "
                "NAME, 1-300 printable characters"
            )
        follow = q.get("follow", "")
        if follow not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ValidationError(f"query.follow: {follow[:40]!r} is not a boolean (1 or 0)")
        return cls(
            after=after,
            kind=kind,
            object=obj,
            limit=_count(q, "limit", DEFAULT_LIMIT, low=1),
            tail=_count(q, "tail", DEFAULT_TAIL, low=0),
            follow=follow in ("1", "true", "yes"),
        )

    def matches(self, body: Body) -> bool:
        if self.kind is not None and body.get("kind") != self.kind:
            return False
        return self.object is None or concerns(body, self.object)


def concerns(body: Body, obj: str) -> bool:
    """Whether an event is about ``obj``: ``KIND/NAME`` (KIND one of ``OBJECT_FIELDS``) or a
    bare ``NAME`` of any kind; tagged with it, or naming it in its message (an event about a
    replica names its node and workload there)."""
    field, sep, name = obj.partition("/")
    fields, want = ((field,), name) if sep and field in OBJECT_FIELDS else (OBJECT_FIELDS, obj)
    if any(body.get(f) == want for f in fields):
        return True
    return want in _WORDS.split(str(body.get("message", "")))


@dataclass(frozen=True)
class Page:
    events: tuple[Body, ...]  # each with its "revision" and "id"
    next: Position  # resume here: nothing that matches lies between the page and it
    more: bool  # the page stopped at ``limit``


def page(entries: Sequence[Entry], query: EventQuery, revision: int) -> Page:
    """The page of ``entries`` (read at store ``revision``) that ``query`` asks for. Pure."""
    after = query.after
    hits = sorted(
        e for e in entries if (after is None or after.precedes(e[0], e[1])) and query.matches(e[2])
    )
    if after is None:
        taken = hits[-query.tail :] if query.tail else []
        return Page(_out(taken), Position(revision), False)
    limit = len(hits) if query.follow else query.limit
    taken, more = hits[:limit], len(hits) > limit
    last = Position(taken[-1][0], taken[-1][1]) if more else Position(revision)
    return Page(_out(taken), last, more)


def _out(entries: Sequence[Entry]) -> tuple[Body, ...]:
    return tuple({**body, "revision": rev, "id": name} for rev, name, body in entries)


async def read_page(table: Table[Body], query: EventQuery) -> Page:
    listing = await table.list()
    entries = [(r.mod_revision, r.name, r.value) for r in listing.records]
    return page(entries, query, listing.revision)


async def feed(
    table: Table[Body], query: EventQuery, after: Position
) -> AsyncGenerator[Body, None]:
    """Every matching event after position ``after``, as it is written, forever. If the store
    has compacted the history the watch needs (a slow reader, a long reconnect), re-reads the
    table from ``after``: events still in the window are not lost."""
    while True:
        start = after.revision + (1 if after.name is None else 0)
        try:
            async with contextlib.aclosing(table.watch(start_revision=start)) as changes:
                async for ev in changes:
                    if ev.type is not EventType.PUT or ev.record is None:
                        continue
                    if not after.precedes(ev.revision, ev.name):
                        continue
                    after = Position(ev.revision, ev.name)
                    if query.matches(ev.record.value):
                        yield {**ev.record.value, "revision": ev.revision, "id": ev.name}
        except Compacted:
            catch_up = await read_page(
                table, EventQuery(after=after, kind=query.kind, object=query.object, follow=True)
            )
            for body in catch_up.events:
                yield body
            after = catch_up.next


def _is_count(raw: str, digits: int) -> bool:
    return raw.isascii() and raw.isdigit() and len(raw) <= digits


def _count(q: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    if not _is_count(raw, 7) or not low <= int(raw) <= MAX_LIMIT:
        raise ValidationError(
            f"query.{name}: {raw[:40]!r} must be a whole number from {low} to {MAX_LIMIT}"
        )
    return int(raw)
