"""Bucket lifecycle: the rules a bucket's owner sets (S3 ``PutBucketLifecycleConfiguration``)
and what they decide, in pure code; ``Expirer`` acts on them through the engine.

What a rule can do (Garage's and S3's subset for an unversioned bucket):

* ``Expiration`` with ``Days`` (the object's last write plus that many days, rounded up to
  the next midnight UTC, as S3 counts) or ``Date`` (a midnight UTC): the object is deleted;
* ``AbortIncompleteMultipartUpload`` with ``DaysAfterInitiation``: an upload still open that
  long (counted the same way) is aborted and its parts released;
* a filter: a key prefix and object sizes (``ObjectSizeGreaterThan``/``LessThan``, strict;
  uploads are chosen by prefix only, their size is not known yet); ``Status`` Enabled or
  Disabled.

Rules live in the bucket's record in the cluster store (``Bucket.lifecycle``: canonical
JSON, ``encode``/``decode``). Once an hour the bucket's *acting node* (the first owner of
the bucket's partition in the current layout that its observer sees present:
``acting_node``) lists the bucket and deletes what is due, one object at a time, each only
if its current version is still the one found due (``Engine.delete_if``), so a PUT that
lands between the listing and the delete is kept. A second node acting on a stale view does
the same deletes again: harmless. Deletes are as asynchronous as S3's: an object may stay
readable for up to an hour (``EVERY_S``) past its due time, or longer while no owner is up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cloudless.lib.clock import Clock
from cloudless.objectstore.layout import LayoutVersion

if TYPE_CHECKING:
    from cloudless.objectstore.engine import Engine

log = logging.getLogger(__name__)
DAY_S = 86400
MAX_RULES = 1000
MAX_DAYS = 100_000
"""Days beyond this (~270 years) are refused as absurd."""
MAX_ID = 255
EVERY_S = 3600.0
"""How often the acting node sweeps each bucket with rules."""
PER_SWEEP = 10_000
"""Objects deleted plus uploads aborted per bucket per sweep at most (the rest: next sweep)."""


@dataclass(frozen=True)
class Rule:
    id: str
    enabled: bool
    prefix: str = ""
    size_gt: int | None = None
    size_lt: int | None = None
    expire_days: int | None = None
    expire_date: int | None = None
    """Seconds since the epoch of a midnight UTC."""
    abort_days: int | None = None

    def covers(self, key: str, size: int) -> bool:
        """Whether this rule's filter picks an object (Status aside)."""
        if not key.startswith(self.prefix):
            return False
        if self.size_gt is not None and not size > self.size_gt:
            return False
        return self.size_lt is None or size < self.size_lt


def next_midnight(t: float) -> int:
    """The first midnight UTC at or after ``t`` (seconds since the epoch)."""
    day = int(t // DAY_S)
    return day * DAY_S if day * DAY_S == t else (day + 1) * DAY_S


def expires_at(rule: Rule, mtime: float) -> int | None:
    """When an object written at ``mtime`` expires under ``rule`` (None: never)."""
    if rule.expire_days is not None:
        return next_midnight(mtime + rule.expire_days * DAY_S)
    return rule.expire_date


def object_due(rules: Iterable[Rule], key: str, size: int, mtime: float, now: float) -> str | None:
    """The id of an enabled rule under which the object is due for deletion at ``now``."""
    for r in rules:
        if not r.enabled or not r.covers(key, size):
            continue
        at = expires_at(r, mtime)
        if at is not None and at <= now:
            return r.id
    return None


def upload_due(rules: Iterable[Rule], key: str, created: float, now: float) -> str | None:
    """The id of an enabled rule under which an upload of ``key`` opened at ``created`` is
    due for abort at ``now``."""
    for r in rules:
        if r.enabled and r.abort_days is not None and key.startswith(r.prefix):
            if next_midnight(created + r.abort_days * DAY_S) <= now:
                return r.id
    return None


def acting_node(layout: LayoutVersion | None, partition: int, absent: set[str]) -> str | None:
    """The node that sweeps a bucket whose rows live in ``partition``: the first of its
    owners not absent (None: no layout, or every owner absent)."""
    if layout is None:
        return None
    for n in layout.partitions[partition]:
        if n not in absent:
            return n
    return None


def encode(rules: Sequence[Rule]) -> str:
    """The canonical JSON kept in the bucket record ("" for no rules)."""
    if not rules:
        return ""
    return json.dumps([asdict(r) for r in rules], sort_keys=True, separators=(",", ":"))


def decode(raw: str) -> tuple[Rule, ...]:
    """Rules from a bucket record; a record that does not decode has none (logged), so a
    damaged record never deletes anything."""
    if not raw:
        return ()
    try:
        return tuple(Rule(**d) for d in json.loads(raw))
    except (ValueError, TypeError) as e:
        log.warning("bucket lifecycle rules do not decode (ignored): %s", e)
        return ()


@dataclass(frozen=True)
class Swept:
    deleted: int = 0
    aborted: int = 0
    kept: int = 0
    """Found due, but changed (rewritten or gone) before the delete."""


class Expirer:
    """One bucket's sweep through ``engine``; ``clock`` gives the wall time rules compare
    with objects' write times."""

    def __init__(self, engine: Engine, clock: Clock, *, limit: int = PER_SWEEP) -> None:
        self.engine = engine
        self.clock = clock
        self.limit = limit

    async def sweep(self, bucket: str, rules: Sequence[Rule]) -> Swept:
        now = self.clock.now()
        deleted = aborted = kept = 0
        live = [r for r in rules if r.enabled]
        expiring = (r.prefix for r in live if (r.expire_days, r.expire_date) != (None, None))
        for prefix in _prefixes(expiring):
            after = ""
            while deleted + kept < self.limit:
                page = await self.engine.list_keys(
                    bucket, prefix=prefix, delimiter="", after=after, limit=1000
                )
                for key, meta in page.keys:
                    if deleted + kept >= self.limit:
                        break
                    if object_due(live, key, meta.size, meta.mtime, now) is None:
                        continue
                    if await self.engine.delete_if(bucket, key, meta.version):
                        deleted += 1
                    else:
                        kept += 1
                if not page.truncated or not page.last:
                    break
                after = page.last
        if any(r.abort_days is not None for r in live):
            uploads = await self.engine.list_uploads(bucket, prefix="", limit=self.limit)
            for key, up in uploads.uploads:
                if deleted + aborted + kept >= self.limit:
                    break
                if upload_due(live, key, up.created, now) is not None:
                    if await self.engine.abort_if_open(bucket, key, up.upload_id):
                        aborted += 1
        return Swept(deleted, aborted, kept)


def _prefixes(prefixes: Iterable[str]) -> list[str]:
    """The fewest prefixes whose listings cover all of ``prefixes`` (one nested in another
    is listed once)."""
    out: list[str] = []
    for p in sorted(set(prefixes)):
        if not any(p.startswith(q) for q in out):
            out.append(p)
    return out
