"""``StoreTokenStore``: the security package's ``TokenStore`` on top of any ``Store``.

``mark_used`` is a compare-and-swap on the record's mod revision, so exactly one of any
number of concurrent callers (on any coordinator) wins. A lost answer (``OutcomeUnknown``) is
resolved by re-reading: if the record now says it was used by us at our time, we won; with a
key fingerprint, a record used by us with that key is ``REPEATED`` (no second write).

``table`` is public so that a caller may put the redemption into a larger transaction
(``cloudless.coordinator.agentapi.enrollment`` writes token, node and event in one).
"""

from __future__ import annotations

from cloudless.lib.errors import Conflict
from cloudless.security.token_store import (
    MarkOutcome,
    MarkResult,
    TokenRecord,
    decide_mark,
    decide_revoke,
)
from cloudless.store.errors import OutcomeUnknown
from cloudless.store.protocol import Store
from cloudless.store.table import Table
from cloudless.store.tables.tokens import TOKENS, TokenRecordCodec


class StoreTokenStore:
    def __init__(self, store: Store, *, prefix: str | None = None, attempts: int = 32) -> None:
        self.table: Table[TokenRecord] = Table(store, prefix or TOKENS.prefix, TokenRecordCodec())
        self._attempts = attempts

    async def save(self, record: TokenRecord) -> None:
        try:
            await self.table.create(record.token_id, record)
        except Conflict:
            raise Conflict(f"token {record.token_id} already exists") from None

    async def get(self, token_id: str) -> TokenRecord | None:
        rec = await self.table.get(token_id)
        return rec.value if rec else None

    async def mark_used(
        self, token_id: str, *, used_by: str, at: float, key: str | None = None
    ) -> MarkResult:
        for _ in range(self._attempts):
            current = await self.table.get(token_id)
            result = decide_mark(
                current.value if current else None, used_by=used_by, at=at, key=key
            )
            if result.outcome is not MarkOutcome.WON or current is None or result.record is None:
                return result
            try:
                rev = await self.table.cas(token_id, result.record, expect=current.mod_revision)
            except OutcomeUnknown:
                again = await self.table.get(token_id)
                if again is not None and again.value == result.record:
                    return result
                continue
            if rev is not None:
                return result
        latest = await self.get(token_id)
        return MarkResult(MarkOutcome.ALREADY_USED, latest)

    async def list(self) -> list[TokenRecord]:
        listing = await self.table.list()
        records = [r.value for r in listing.records]
        return sorted(records, key=lambda r: (r.created_at, r.token_id))

    async def revoke(self, token_id: str, *, at: float, reason: str) -> TokenRecord | None:
        def change(rec: TokenRecord | None) -> TokenRecord | None:
            if rec is None or rec.revoked_at is not None:
                return None
            return decide_revoke(rec, at=at, reason=reason)

        updated = await self.table.update(token_id, change)
        return updated.value if updated else None
