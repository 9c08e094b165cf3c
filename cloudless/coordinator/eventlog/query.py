"""Reading the event log: ``GET /v1/events`` as a pure query over records, plus the watch.

Every event carries its store ``revision`` (the revision that wrote it; events are never
rewritten), and revisions order events the way the store committed them. A reader resumes
with ``since=R``: exactly the matching events written after revision ``R``, none twice, none
skipped, for as long as they are inside the window (``EventBounds``).

* ``since`` absent: the newest ``tail`` matching events, oldest first.
* ``since=R`` (or ``continue=R``, the opaque form of the same token): the matching events with
  revision > R, oldest first, at most ``limit``; ``Page.next_since`` says where the next page
  (or a follow) starts.
* ``follow``: after the page, every matching event as it is written (``follow``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudless.lib.errors import ValidationError
from cloudless.store.errors import Compacted
from cloudless.store.table import Table
from cloudless.store.types import EventType

OBJECT_FIELDS = ("node", "workload", "replica")
CONTINUE_HEADER = "Cloudless-Continue"  # the revision to pass as ``since`` next
MORE_HEADER = "Cloudless-More"  # "1" when a ``since`` page stopped at its limit
DEFAULT_TAIL = 50
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_KINDS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_WORDS = re.compile(r"[\s:,;()]+")

Body = dict[str, Any]


@dataclass(frozen=True)
class EventQuery:
    since: int | None = None
    kind: str | None = None
    object: str | None = None
    limit: int = DEFAULT_LIMIT
    tail: int = DEFAULT_TAIL
    follow: bool = False

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> EventQuery:
        """From query parameters; a bad one is a ``ValidationError`` naming it."""
        since = _revision(q, "since")
        token = _revision(q, "continue")
        if since is not None and token is not None and since != token:
            raise ValidationError(
                f"query since={since} and continue={token} disagree: pass only one"
            )
        kind = q.get("kind")
        if kind is not None and not _KINDS.match(kind):
            raise ValidationError(
                f"query kind: {kind[:40]!r} is not an event kind (e.g. node, workload, security)"
            )
        obj = q.get("object")
        if obj is not None and not (0 < len(obj) <= 300 and obj.isprintable()):
            raise ValidationError(
                "query object: expected KIND/NAME (node/ID, workload/NAME, replica/ID) or a "
                "NAME, 1-300 printable characters"
            )
        follow = q.get("follow", "")
        if follow not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ValidationError(f"query follow: {follow[:40]!r} is not a boolean (1 or 0)")
        return cls(
            since=since if since is not None else token,
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
    events: tuple[Body, ...]  # each with its "revision"
    next_since: int  # resume here: nothing that matches was written between the page and it
    more: bool  # a ``since`` page stopped at ``limit``


def page(records: Sequence[tuple[int, Body]], query: EventQuery, revision: int) -> Page:
    """The page of ``records`` (``(revision, body)`` read at store ``revision``) that
    ``query`` asks for. Pure."""
    hits = sorted(
        (r for r in records if query.matches(r[1]) and (query.since is None or r[0] > query.since)),
        key=lambda r: r[0],
    )
    if query.since is None:
        taken = hits[-query.tail :] if query.tail else []
        return Page(_with_revisions(taken), revision, False)
    limit = len(hits) if query.follow else query.limit
    taken, more = hits[:limit], len(hits) > limit
    return Page(_with_revisions(taken), taken[-1][0] if more else revision, more)


def _with_revisions(records: Sequence[tuple[int, Body]]) -> tuple[Body, ...]:
    return tuple({**body, "revision": rev} for rev, body in records)


async def read_page(table: Table[Body], query: EventQuery) -> Page:
    listing = await table.list()
    return page([(r.mod_revision, r.value) for r in listing.records], query, listing.revision)


async def feed(table: Table[Body], query: EventQuery, after: int) -> AsyncGenerator[Body, None]:
    """Every matching event written after revision ``after``, as it is written, forever. If
    the store has compacted the history the watch needs (a slow reader, a long reconnect),
    re-reads the table from ``after``: events still in the window are not lost."""
    while True:
        try:
            async with contextlib.aclosing(table.watch(start_revision=after + 1)) as changes:
                async for ev in changes:
                    if ev.type is EventType.PUT and ev.record is not None:
                        if query.matches(ev.record.value) and ev.revision > after:
                            yield {**ev.record.value, "revision": ev.revision}
                        after = max(after, ev.revision)
        except Compacted:
            listing = await table.list()
            catch_up = page(
                [(r.mod_revision, r.value) for r in listing.records],
                EventQuery(since=after, kind=query.kind, object=query.object, follow=True),
                listing.revision,
            )
            for body in catch_up.events:
                yield body
            after = catch_up.next_since


def _revision(q: Mapping[str, str], name: str) -> int | None:
    raw = q.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19):
        raise ValidationError(f"query {name}: {raw[:40]!r} is not a store revision (0 or more)")
    return int(raw)


def _count(q: Mapping[str, str], name: str, default: int, *, low: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7) or not low <= int(raw) <= MAX_LIMIT:
        raise ValidationError(
            f"query {name}: {raw[:40]!r} must be a whole number from {low} to {MAX_LIMIT}"
        )
    return int(raw)
