"""Bootstrap (join) tokens: one-time, expiring, bound to this cluster.

A token string is ``CLD1:<ca-digest>:<secret>:<jwt>``:

* ``ca-digest`` — hex SHA-256 of this cluster's root certificate (DER). A joining node fetches
  the CA certificate from the coordinator over an unauthenticated channel and checks it against
  this digest (``pinned_ca``) *before* sending anything, as swarmkit and K3s do.
* ``secret`` — 128 random bits (32 hex chars). The coordinator stores only its **bcrypt** hash,
  so a dump of the store yields no usable token.
* ``jwt`` — HS256 over ``jti`` (token id), ``use``, ``labels`` (pinned onto the node), ``iat``,
  ``exp`` and ``cad`` (the CA digest again), signed with a key derived from this cluster's root
  key (``CertificateAuthority.token_signing_key``). A token minted by another cluster fails the
  digest check and, were the digest edited, the signature check.

Checks run cheapest first so that garbage never costs a bcrypt: format -> cluster digest ->
signature -> expiry (injected clock) -> use -> store state -> bcrypt -> atomic mark-used.

Redemption is idempotent for its consumer: the record keeps who used the token (``used_by``)
and the SHA-256 of their public key (``used_by_key``). A retry by that same consumer with that
same key (its first answer was lost: timeout, ``OutcomeUnknown``, a dropped connection) passes
``verify`` and ``redeem`` again; anyone else presenting the used token (another node id, or the
same node id with another key: a stolen token) is refused with ``TokenAlreadyUsed``.

bcrypt cost: default ``DEFAULT_BCRYPT_COST = 10``. Why 10: the secret is 128 random bits,
so bcrypt is defence in depth for a leaked store rather than the thing that stops guessing;
10 is OWASP's floor and costs ~73 ms per check on the shared 2-core box (11: ~147 ms,
12: ~300 ms; ``python -m bench.security``), which keeps the enrolment critical path near
80-90 ms at P50 (cost 12: ~310 ms) and lets a coordinator admit ~13 nodes/s per core during
a mass join. bcrypt runs in a worker thread (it releases the GIL), and only for tokens whose
HMAC signature already verified, so it is not a cheap DoS lever.
Raise the cost with ``bcrypt_cost=`` if tokens are long-lived or the store is exposed.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt
import jwt
from cryptography.hazmat.primitives import serialization

from cloudless.lib.clock import Clock
from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import IdSource, RandomIds
from cloudless.security.bundle import certificate_digest, load_pem_certificates
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import (
    CaDigestMismatch,
    MalformedCertificate,
    TokenAlreadyUsed,
    TokenExpired,
    TokenForeignCluster,
    TokenMalformed,
    TokenNotFound,
    TokenRevoked,
    TokenSecretMismatch,
    TokenSignatureInvalid,
    TokenWrongUse,
)
from cloudless.security.token_store import (
    InMemoryTokenStore,
    MarkOutcome,
    TokenRecord,
    TokenStore,
    TokenUse,
    used_by_same,
)

__all__ = [
    "DEFAULT_BCRYPT_COST",
    "DEFAULT_TOKEN_TTL",
    "InMemoryTokenStore",
    "IssuedToken",
    "ParsedToken",
    "TokenClaims",
    "TokenManager",
    "TokenRecord",
    "TokenStore",
    "TokenUse",
    "check_state",
    "parse_token",
    "pinned_ca",
]

PREFIX = "CLD1"
DEFAULT_TOKEN_TTL = 24 * 3600
MAX_TOKEN_TTL = 366 * 24 * 3600  # a join token lives at most a year
DEFAULT_BCRYPT_COST = 10
ALGORITHM = "HS256"
AUDIENCE = "cloudless-join"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ParsedToken:
    ca_digest: str
    secret: str
    jwt: str


@dataclass(frozen=True)
class TokenClaims:
    token_id: str
    use: TokenUse
    labels: dict[str, str]
    issued_at: float
    expires_at: float
    ca_digest: str


@dataclass(frozen=True)
class IssuedToken:
    token: str  # show once to the operator; it is never stored
    record: TokenRecord


def parse_token(token: str) -> ParsedToken:
    """Split a token string; ``TokenMalformed`` says which part is wrong."""
    if not isinstance(token, str):
        raise TokenMalformed("join token must be a string")
    parts = token.strip().split(":")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise TokenMalformed(
            f"join token is malformed: expected '{PREFIX}:<ca-digest>:<secret>:<jwt>'; copy it "
            "again from `cloudless token create`"
        )
    _, digest, secret, token_jwt = parts
    if not _HEX64.match(digest):
        raise TokenMalformed("join token CA digest must be 64 lowercase hex characters")
    if not _HEX32.match(secret):
        raise TokenMalformed("join token secret must be 32 lowercase hex characters")
    if not _JWT.match(token_jwt):
        raise TokenMalformed("join token JWT part is not header.payload.signature")
    return ParsedToken(digest, secret, token_jwt)


def pinned_ca(token: str, ca_pem: bytes) -> bytes:
    """Client side: the root (PEM) the server presented, *if* it is the one the token pins.

    ``ca_pem`` may be one certificate or a bundle; only the certificate whose DER SHA-256
    equals the token's digest is returned, so a man in the middle cannot slip an extra root in
    next to the real one. Raises ``CaDigestMismatch`` otherwise: do not send the token.
    """
    want = parse_token(token).ca_digest
    try:
        certs = load_pem_certificates(ca_pem)
    except MalformedCertificate as exc:
        raise CaDigestMismatch(f"the server's CA certificate is unreadable ({exc})") from None
    seen = []
    for c in certs:
        got = certificate_digest(c)
        if hmac.compare_digest(got, want):
            return c.public_bytes(serialization.Encoding.PEM)
        seen.append(got[:16])
    raise CaDigestMismatch(
        f"the server's CA (sha256 {', '.join(seen) or 'none'}…) is not the CA this token pins "
        f"(sha256 {want[:16]}…): you may be talking to the wrong cluster or an impostor; "
        "nothing was sent"
    )


class TokenManager:
    """Mints, checks, consumes, lists and revokes join tokens for one cluster."""

    def __init__(
        self,
        ca: CertificateAuthority,
        store: TokenStore,
        clock: Clock,
        *,
        bcrypt_cost: int = DEFAULT_BCRYPT_COST,
        ids: IdSource | None = None,
    ) -> None:
        if not 4 <= bcrypt_cost <= 31:
            raise ValidationError(f"bcrypt_cost={bcrypt_cost} must be within 4..31 (default 10)")
        self.ca = ca
        self.store = store
        self.clock = clock
        self.bcrypt_cost = bcrypt_cost
        self._ids = ids or RandomIds()
        self._key_for: tuple[str, bytes] | None = None

    @property
    def _key(self) -> bytes:
        """The HMAC key of the *current* root (re-derived after a root switch)."""
        if self._key_for is None or self._key_for[0] != self.ca.digest:
            self._key_for = (self.ca.digest, self.ca.token_signing_key())
        return self._key_for[1]

    async def create(
        self,
        use: TokenUse,
        *,
        ttl_seconds: float = DEFAULT_TOKEN_TTL,
        labels: Mapping[str, str] | None = None,
        description: str = "",
    ) -> IssuedToken:
        if not 0 < ttl_seconds <= MAX_TOKEN_TTL:  # false for NaN too
            raise ValidationError(
                f"ttl_seconds: {ttl_seconds!r} must be in (0, {MAX_TOKEN_TTL}] seconds "
                "(default 24 h, at most a year)"
            )
        pinned = dict(labels or {})
        for k in pinned:
            if not _LABEL_KEY.match(k):
                raise ValidationError(
                    f"label key {k!r} is invalid: use letters, digits, '.', '-', '/'"
                )
        now = self.clock.now()
        expires_at = int(now + ttl_seconds)
        token_id = self._ids.new_id("tok-")
        secret = secrets.token_hex(16)
        claims = {
            "jti": token_id,
            "use": TokenUse(use).value,
            "labels": pinned,
            "iat": int(now),
            "exp": expires_at,
            "cad": self.ca.digest,
            "aud": AUDIENCE,
        }
        signed = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        hashed = await asyncio.to_thread(
            bcrypt.hashpw, secret.encode(), bcrypt.gensalt(self.bcrypt_cost)
        )
        record = TokenRecord(
            token_id=token_id,
            use=TokenUse(use),
            secret_hash=hashed,
            created_at=now,
            expires_at=float(expires_at),
            labels=pinned,
            description=description,
        )
        await self.store.save(record)
        return IssuedToken(f"{PREFIX}:{self.ca.digest}:{secret}:{signed}", record)

    def check_signed(
        self, token: str, use: TokenUse | None = None
    ) -> tuple[ParsedToken, TokenClaims]:
        """The cheap, pure part: format, cluster, signature, expiry, use. No store, no bcrypt."""
        parsed = parse_token(token)
        if not hmac.compare_digest(parsed.ca_digest, self.ca.digest):
            raise TokenForeignCluster(
                "join token was minted by another cluster (its CA sha256 "
                f"{parsed.ca_digest[:16]}…, this cluster's {self.ca.digest[:16]}…): ask this "
                "cluster's operator for a token"
            )
        try:
            raw = jwt.decode(
                parsed.jwt,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["jti", "use", "exp", "iat", "cad", "aud"],
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenSignatureInvalid(
                "join token signature does not verify: it was altered or forged; create a new one"
            ) from None
        except jwt.PyJWTError as exc:
            raise TokenMalformed(f"join token claims are invalid ({exc})") from None
        claims = _claims(raw)
        if claims.ca_digest != self.ca.digest:
            raise TokenForeignCluster("join token's signed CA digest is not this cluster's")
        now = self.clock.now()
        if now >= claims.expires_at:
            raise TokenExpired(
                f"join token {claims.token_id} expired {now - claims.expires_at:.0f}s ago: "
                "create a new one with `cloudless token create`"
            )
        if use is not None and claims.use is not use:
            raise TokenWrongUse(
                f"join token {claims.token_id} is for {claims.use.value}, not {use.value}: "
                f"create a {use.value} token"
            )
        return parsed, claims

    async def verify(
        self,
        token: str,
        use: TokenUse | None = None,
        *,
        consumer: str | None = None,
        key: str | None = None,
    ) -> TokenClaims:
        """Everything short of consuming: signed checks, store state and the bcrypt secret.

        A token already used by ``consumer`` holding ``key`` (see ``check_record``) passes."""
        parsed, claims = self.check_signed(token, use)
        rec = await self.store.get(claims.token_id)
        await self.check_record(parsed, claims, rec, consumer=consumer, key=key)
        return claims

    async def check_record(
        self,
        parsed: ParsedToken,
        claims: TokenClaims,
        rec: TokenRecord | None,
        *,
        consumer: str | None = None,
        key: str | None = None,
    ) -> bool:
        """The stored half of ``verify`` against a record the caller read: state, then the
        bcrypt secret (in a worker thread). True iff the token was already redeemed by this
        very ``consumer`` and ``key`` (a retry); raises for every refusal."""
        if rec is None:
            raise TokenNotFound(f"join token {claims.token_id} is unknown to this cluster")
        repeat = check_state(rec, consumer=consumer, key=key)
        ok = await asyncio.to_thread(bcrypt.checkpw, parsed.secret.encode(), rec.secret_hash)
        if not ok:
            raise TokenSecretMismatch(
                f"join token {claims.token_id} secret is wrong: copy the whole token again"
            )
        return repeat

    async def consume(
        self, token: str, use: TokenUse, *, consumer: str, key: str | None = None
    ) -> TokenClaims:
        """``verify`` then atomically mark used: of concurrent consumers exactly one wins (a
        retry by the winner with the same ``key`` wins again)."""
        claims = await self.verify(token, use, consumer=consumer, key=key)
        return await self.redeem(claims, consumer=consumer, key=key)

    async def redeem(
        self, claims: TokenClaims, *, consumer: str, key: str | None = None
    ) -> TokenClaims:
        """Atomically mark a token that ``verify`` accepted as used by ``consumer`` (holding
        the public key whose fingerprint is ``key``). Idempotent for that consumer and key."""
        result = await self.store.mark_used(
            claims.token_id, used_by=consumer, at=self.clock.now(), key=key
        )
        if result.won:
            return claims
        if result.outcome is MarkOutcome.NOT_FOUND or result.record is None:
            raise TokenNotFound(f"join token {claims.token_id} is unknown to this cluster")
        check_state(result.record, consumer=consumer, key=key)
        raise TokenAlreadyUsed(f"join token {claims.token_id} was already used")  # unreachable

    async def list(self) -> list[TokenRecord]:
        return await self.store.list()

    async def revoke(self, token_id: str, *, reason: str = "revoked by operator") -> TokenRecord:
        rec = await self.store.revoke(token_id, at=self.clock.now(), reason=reason)
        if rec is None:
            raise TokenNotFound(f"no join token {token_id}: list them with `cloudless token ls`")
        return rec


def check_state(rec: TokenRecord, *, consumer: str | None = None, key: str | None = None) -> bool:
    """Pure: may ``consumer`` (holding ``key``) still use this record? False: it is unused;
    True: it was used by this very consumer and key (a retry). Raises ``TokenRevoked`` or
    ``TokenAlreadyUsed`` (saying why a retry does not count) otherwise."""
    if rec.revoked_at is not None:
        raise TokenRevoked(
            f"join token {rec.token_id} was revoked ({rec.revoked_reason}): ask for a new one"
        )
    if rec.used_at is None:
        return False
    if consumer is not None and used_by_same(rec, used_by=consumer, key=key):
        return True
    why = ""
    if consumer is not None and rec.used_by == consumer:
        why = (
            " with another key (a retry must send the same CSR)"
            if key is not None and rec.used_by_key is not None
            else " (no key fingerprint to prove it is the same requester)"
        )
    raise TokenAlreadyUsed(
        f"join token {rec.token_id} was already used by {rec.used_by}; this request"
        f"{' from ' + consumer if consumer else ''} may not reuse it{why}: tokens are one-time; "
        "create a new one"
    )


def _claims(raw: dict[str, object]) -> TokenClaims:
    try:
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise TypeError("labels must be an object")
        return TokenClaims(
            token_id=str(raw["jti"]),
            use=TokenUse(str(raw["use"])),
            labels={str(k): str(v) for k, v in labels.items()},
            issued_at=float(raw["iat"]),  # type: ignore[arg-type]
            expires_at=float(raw["exp"]),  # type: ignore[arg-type]
            ca_digest=str(raw["cad"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenMalformed(f"join token claims are invalid ({exc})") from None
