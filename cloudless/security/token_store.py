"""Where bootstrap-token records live: a small async protocol and its in-memory twin.

The store holds only what the coordinator needs to check and account for a token: its id,
intended use, pinned labels, expiry, the **bcrypt hash** of its secret (never the secret) and
its usage/revocation state. The contract an implementation must keep (the shared suite in
``tests/contract/security/token_store_contract.py`` checks it):

* ``save`` creates a record; saving an id that exists raises ``Conflict``.
* ``get`` returns the record or None.
* ``mark_used`` is **atomic**: of any number of concurrent calls for one unused, unrevoked
  token, exactly one returns ``WON``; the others get ``ALREADY_USED`` (or ``REVOKED``,
  ``NOT_FOUND``) and the record they lost to. A repeat by the consumer that won, naming the
  same consumer *and* the same key fingerprint (``key``), is ``REPEATED`` (``won`` is true,
  nothing is written): a retry after a lost answer gets its certificate, while anyone else
  holding the used token (another node id, or the same id with another key) is refused.
* ``list`` returns every record, ordered by ``created_at`` then id.
* ``revoke`` marks a record revoked (idempotent: the first revocation's time and reason
  stay) and returns it, or None if there is no such token.

Records serialize to JSON-able dicts (``to_dict``/``from_dict``) for an etcd-backed store,
which implements ``mark_used`` as a compare-and-swap on the key's mod revision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cloudless.lib.errors import Conflict


class TokenUse(enum.StrEnum):
    NODE_ENROLLMENT = "node-enrollment"
    COORDINATOR_JOIN = "coordinator-join"


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    use: TokenUse
    secret_hash: bytes
    created_at: float
    expires_at: float
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""
    used_at: float | None = None
    used_by: str | None = None
    used_by_key: str | None = None  # sha256 of the consumer's public key (SPKI DER), hex
    revoked_at: float | None = None
    revoked_reason: str | None = None

    def state(self, now: float) -> str:
        """``revoked``, ``used``, ``expired`` or ``active`` (for listings)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        if now >= self.expires_at:
            return "expired"
        return "active"

    def public_dict(self) -> dict[str, Any]:
        """``to_dict`` without the secret's hash: what the API may show."""
        d = self.to_dict()
        del d["secret_hash"]
        return d

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "use": self.use.value,
            "secret_hash": self.secret_hash.decode("ascii"),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "labels": dict(self.labels),
            "description": self.description,
            "used_at": self.used_at,
            "used_by": self.used_by,
            "used_by_key": self.used_by_key,
            "revoked_at": self.revoked_at,
            "revoked_reason": self.revoked_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenRecord:
        return cls(
            token_id=str(d["token_id"]),
            use=TokenUse(d["use"]),
            secret_hash=str(d["secret_hash"]).encode("ascii"),
            created_at=float(d["created_at"]),
            expires_at=float(d["expires_at"]),
            labels={str(k): str(v) for k, v in (d.get("labels") or {}).items()},
            description=str(d.get("description", "")),
            used_at=d.get("used_at"),
            used_by=d.get("used_by"),
            used_by_key=d.get("used_by_key"),
            revoked_at=d.get("revoked_at"),
            revoked_reason=d.get("revoked_reason"),
        )


class MarkOutcome(enum.StrEnum):
    WON = "won"
    REPEATED = "repeated"  # already used by this very consumer and key: nothing written
    ALREADY_USED = "already_used"
    REVOKED = "revoked"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class MarkResult:
    outcome: MarkOutcome
    record: TokenRecord | None

    @property
    def won(self) -> bool:
        return self.outcome in (MarkOutcome.WON, MarkOutcome.REPEATED)


class TokenStore(Protocol):
    async def save(self, record: TokenRecord) -> None: ...

    async def get(self, token_id: str) -> TokenRecord | None: ...

    async def mark_used(
        self, token_id: str, *, used_by: str, at: float, key: str | None = None
    ) -> MarkResult: ...

    async def list(self) -> list[TokenRecord]: ...

    async def revoke(self, token_id: str, *, at: float, reason: str) -> TokenRecord | None: ...


def used_by_same(record: TokenRecord, *, used_by: str, key: str | None) -> bool:
    """True iff ``record`` was used by ``used_by`` holding the key ``key``. Without a key
    fingerprint on both sides it is never true: a node id alone is no proof of identity."""
    return (
        record.used_at is not None
        and key is not None
        and record.used_by_key is not None
        and record.used_by == used_by
        and record.used_by_key == key
    )


def decide_mark(
    record: TokenRecord | None, *, used_by: str, at: float, key: str | None = None
) -> MarkResult:
    """The pure core of ``mark_used``: what the outcome is and what the record becomes."""
    if record is None:
        return MarkResult(MarkOutcome.NOT_FOUND, None)
    if record.revoked_at is not None:
        return MarkResult(MarkOutcome.REVOKED, record)
    if record.used_at is not None:
        if used_by_same(record, used_by=used_by, key=key):
            return MarkResult(MarkOutcome.REPEATED, record)
        return MarkResult(MarkOutcome.ALREADY_USED, record)
    return MarkResult(
        MarkOutcome.WON, replace(record, used_at=at, used_by=used_by, used_by_key=key)
    )


def decide_revoke(record: TokenRecord, *, at: float, reason: str) -> TokenRecord:
    if record.revoked_at is not None:
        return record
    return replace(record, revoked_at=at, revoked_reason=reason)


class InMemoryTokenStore:
    """The fake: a dict. Atomic because nothing awaits between reading and writing."""

    def __init__(self) -> None:
        self._records: dict[str, TokenRecord] = {}

    async def save(self, record: TokenRecord) -> None:
        if record.token_id in self._records:
            raise Conflict(f"token {record.token_id} already exists")
        self._records[record.token_id] = record

    async def get(self, token_id: str) -> TokenRecord | None:
        return self._records.get(token_id)

    async def mark_used(
        self, token_id: str, *, used_by: str, at: float, key: str | None = None
    ) -> MarkResult:
        result = decide_mark(self._records.get(token_id), used_by=used_by, at=at, key=key)
        if result.outcome is MarkOutcome.WON and result.record is not None:
            self._records[token_id] = result.record
        return result

    async def list(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.token_id))

    async def revoke(self, token_id: str, *, at: float, reason: str) -> TokenRecord | None:
        rec = self._records.get(token_id)
        if rec is None:
            return None
        new = decide_revoke(rec, at=at, reason=reason)
        self._records[token_id] = new
        return new
