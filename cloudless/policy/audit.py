"""The audit log: who did what, allowed or denied, when; bounded in the store.

Entries live under ``/cloudless/audit/<at-µs>-<seq>`` (time-ordered keys, so a listing is a
timeline). The log keeps the newest ``cap`` entries: every ``trim_every`` appends the writer
lists the log and deletes the oldest beyond the cap (``overflow``, pure), so between trims it
holds at most ``cap + trim_every`` entries. Denials are also rate-limited
(``denied_per_s``): a client hammering a forbidden route cannot turn into a write flood.
Losing an entry because the store is down is logged, never fails the request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cloudless.lib.clock import Clock
from cloudless.store.codec import DictCodec
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables import ROOT

log = logging.getLogger("cloudless.audit")

AUDIT_PREFIX = f"{ROOT}audit/"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    user: str  # SPIFFE id of the caller
    role: str
    verb: str
    resource: str
    namespace: str
    name: str
    allowed: bool
    reason: str
    method: str
    path: str
    status: int = 0  # the HTTP status answered (0: not known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overflow(names: Sequence[str], cap: int) -> list[str]:
    """The oldest names to delete so that at most ``cap`` remain (names sort by time)."""
    ordered = sorted(names)
    return ordered[: max(0, len(ordered) - cap)]


class AuditLog:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        cap: int = 10_000,
        trim_every: int = 100,
        denied_per_s: int = 20,
    ) -> None:
        self.table: Table[dict[str, Any]] = Table(store, AUDIT_PREFIX, DictCodec("audit"))
        self.clock = clock
        self.cap = cap
        self.trim_every = trim_every
        self.denied_per_s = denied_per_s
        self._appended = 0
        self._seq = 0
        self._window = -1
        self._denied = 0

    async def record(self, entry: AuditEntry) -> None:
        if not entry.allowed:
            second = int(self.clock.monotonic())
            if second != self._window:
                self._window, self._denied = second, 0
            self._denied += 1
            if self._denied > self.denied_per_s:
                return
        self._seq = (self._seq + 1) % 1_000_000
        name = f"{int(entry.at * 1e6):020d}-{self._seq:06d}"
        try:
            await self.table.put(name, entry.to_dict())
            self._appended += 1
            if self._appended % self.trim_every == 0:
                await self.trim()
        except StoreError as e:
            log.warning("audit entry not recorded (%s): %s", e, entry)

    async def trim(self) -> int:
        listing = await self.table.list()
        doomed = overflow([r.name for r in listing.records], self.cap)
        step = Table.MAX_BATCH
        for i in range(0, len(doomed), step):
            await self.table.store.txn((), [self.table.delete_op(n) for n in doomed[i : i + step]])
        return len(doomed)

    async def tail(self, n: int) -> list[dict[str, Any]]:
        listing = await self.table.list()
        recs = listing.records[-n:] if n else listing.records
        return [r.value for r in recs]
