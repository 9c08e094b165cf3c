"""Revocation: a list the mTLS authorizer consults on every connection and every RPC.

Two kinds of entry:

* **by serial** — one certificate is dead (a leaked key, a superseded admin cert);
* **by identity** — every certificate of a SPIFFE ID issued at or before a moment is dead.
  This is what removing a node uses: its current certificate *and* any renewal issued before
  the removal stop working at once, while a later re-enrolment under the same ID (issued after
  the removal) works. "Issued at" is ``notBefore + BACKDATE_SECONDS`` (the CA back-dates).

The list is a plain value with a version number that moves on every change; the coordinator
persists it (``to_json``/``from_json``, or ``save``/``load`` to a 0600 file) and hands the same
object to its ``Authorizer``, so a revocation takes effect on the next check without a
restart. ``watch`` lets long-lived sessions (streams) end the moment their certificate is
revoked (``tls.RevocationGuard``). Entries are kept until the certificate would have
expired anyway (``prune``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509

from cloudless.security._files import write_private
from cloudless.security.ca import BACKDATE_SECONDS
from cloudless.security.identity import SpiffeId, load_certificate


@dataclass(frozen=True)
class Revocation:
    reason: str
    revoked_at: float
    serial: int | None = None
    spiffe_id: str | None = None
    expires_at: float | None = None  # when the entry may be pruned (None: keep)

    def describe(self) -> str:
        what = f"serial {self.serial:x}" if self.serial is not None else str(self.spiffe_id)
        return f"{what} revoked at {self.revoked_at:.0f}: {self.reason}"


class RevocationList:
    def __init__(self) -> None:
        self._by_serial: dict[int, Revocation] = {}
        self._by_identity: dict[str, Revocation] = {}
        self._watchers: list[Callable[[Revocation], None]] = []
        self.version = 0

    def watch(self, callback: Callable[[Revocation], None]) -> Callable[[], None]:
        """Call ``callback(entry)`` after every new revocation; returns an unsubscribe."""
        self._watchers.append(callback)

        def unsubscribe() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unsubscribe

    def _changed(self, entry: Revocation) -> None:
        self.version += 1
        for cb in list(self._watchers):
            cb(entry)

    # -- changes --------------------------------------------------------------------------------

    def revoke_serial(
        self, serial: int, *, reason: str, at: float, expires_at: float | None = None
    ) -> Revocation:
        entry = Revocation(reason=reason, revoked_at=at, serial=serial, expires_at=expires_at)
        self._by_serial[serial] = entry
        self._changed(entry)
        return entry

    def revoke_certificate(
        self, cert: x509.Certificate | bytes | str, *, reason: str, at: float
    ) -> Revocation:
        c = load_certificate(cert)
        return self.revoke_serial(
            c.serial_number, reason=reason, at=at, expires_at=c.not_valid_after_utc.timestamp()
        )

    def revoke_identity(self, spiffe_id: SpiffeId, *, reason: str, at: float) -> Revocation:
        """Kill every certificate of ``spiffe_id`` issued at or before ``at``."""
        entry = Revocation(reason=reason, revoked_at=at, spiffe_id=spiffe_id.uri)
        self._by_identity[spiffe_id.uri] = entry
        self._changed(entry)
        return entry

    def prune(self, now: float) -> int:
        """Drop serial entries whose certificate has expired anyway; returns how many."""
        dead = [
            s for s, e in self._by_serial.items() if e.expires_at is not None and e.expires_at < now
        ]
        for s in dead:
            del self._by_serial[s]
        if dead:
            self.version += 1
        return len(dead)

    # -- questions --------------------------------------------------------------------------------

    def check(self, cert: x509.Certificate, spiffe_id: SpiffeId | None = None) -> Revocation | None:
        """The entry that revokes ``cert``, or None. Pure lookup, no clock."""
        entry = self._by_serial.get(cert.serial_number)
        if entry is not None:
            return entry
        if not self._by_identity:
            return None
        sid = spiffe_id or _maybe_spiffe(cert)
        if sid is None:
            return None
        entry = self._by_identity.get(sid.uri)
        if entry is None:
            return None
        issued_at = cert.not_valid_before_utc.timestamp() + BACKDATE_SECONDS
        return entry if issued_at <= entry.revoked_at else None

    def identity_revoked(self, uri: str, issued_at: float) -> Revocation | None:
        """The entry that revokes identity ``uri`` for something issued at ``issued_at``
        (a certificate, a console session), or None. Pure lookup, no clock."""
        entry = self._by_identity.get(uri)
        return entry if entry is not None and issued_at <= entry.revoked_at else None

    def is_revoked(self, cert: x509.Certificate | bytes | str) -> bool:
        return self.check(load_certificate(cert)) is not None

    def __len__(self) -> int:
        return len(self._by_serial) + len(self._by_identity)

    # -- persistence ------------------------------------------------------------------------------

    def to_json(self) -> str:
        entries = [asdict(e) for e in (*self._by_serial.values(), *self._by_identity.values())]
        return json.dumps({"version": self.version, "entries": entries}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RevocationList:
        data = json.loads(text)
        rl = cls()
        for raw in data.get("entries", []):
            e = Revocation(**raw)
            if e.serial is not None:
                rl._by_serial[e.serial] = e
            elif e.spiffe_id is not None:
                rl._by_identity[e.spiffe_id] = e
        rl.version = int(data.get("version", 0))
        return rl

    def save(self, path: Path) -> None:
        write_private(path, self.to_json().encode())

    @classmethod
    def load(cls, path: Path) -> RevocationList:
        return cls.from_json(path.read_text()) if path.exists() else cls()


def _maybe_spiffe(cert: x509.Certificate) -> SpiffeId | None:
    try:
        return SpiffeId.from_certificate(cert)
    except Exception:
        return None
