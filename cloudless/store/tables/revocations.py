"""``revocations/<serial-or-id>``: revoked certificates and identities (never deleted
before their expiry, so every coordinator refuses them)."""

from __future__ import annotations

from dataclasses import dataclass

from cloudless.store.codec import DataclassCodec
from cloudless.store.tables import TableSpec


@dataclass(frozen=True)
class Revocation:
    subject: str  # certificate serial (hex) or SPIFFE id
    reason: str
    revoked_at: float
    expires_at: float  # after this the credential is dead anyway and the record may go


REVOCATIONS = TableSpec("revocations", DataclassCodec(Revocation, kind="revocation"))
