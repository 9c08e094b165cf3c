"""Console logins: one-time links and signed session cookies.

``LoginLinks`` is a clock-driven table of one-time secrets (60 s); ``Sessions`` signs and
checks session tokens (JWT, HS256) with the cluster's console key, which the first
coordinator that needs it creates in the store (create-if-absent, so every coordinator
ends up with the same key).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jwt

from cloudless.lib.clock import Clock
from cloudless.store.protocol import Store
from cloudless.store.tables import ROOT
from cloudless.store.types import Compare, Get, GetResult, Put

KEY = f"{ROOT}config/console-key"
LINK_TTL_S = 60.0
SESSION_TTL_S = 8 * 3600.0
MAX_TOKEN = 4096


@dataclass(frozen=True)
class Login:
    who: str  # the identity that asked for the link (a SPIFFE id)
    expires_at: float


@dataclass(frozen=True)
class Session:
    who: str
    issued_at: float


class LoginLinks:
    """One-time secrets: ``issue`` for a caller, ``redeem`` once within ``LINK_TTL_S``."""

    def __init__(self, clock: Clock, ttl_s: float = LINK_TTL_S) -> None:
        self.clock = clock
        self.ttl_s = ttl_s
        self._pending: dict[str, Login] = {}

    def issue(self, who: str) -> str:
        now = self.clock.now()
        self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        secret = secrets.token_urlsafe(32)
        self._pending[secret] = Login(who, now + self.ttl_s)
        return secret

    def redeem(self, secret: str) -> tuple[str | None, str]:
        """The identity the link was issued to, or ``None`` with the reason."""
        login = self._pending.pop(secret, None) if len(secret) < 100 else None
        if login is None:
            return None, "this login link is unknown or was already used: run `cloudless ui`"
        if login.expires_at <= self.clock.now():
            return None, "this login link has expired (60 s): run `cloudless ui` again"
        return login.who, ""


class Sessions:
    """Session tokens signed with the cluster's console key."""

    def __init__(self, store: Store, clock: Clock, ttl_s: float = SESSION_TTL_S) -> None:
        self.store = store
        self.clock = clock
        self.ttl_s = ttl_s
        self._key: bytes | None = None

    async def key(self) -> bytes:
        if self._key is None:
            mine = secrets.token_bytes(32)
            res = await self.store.txn(
                [Compare.version(KEY, "==", 0)], [Put(KEY, mine)], [Get(KEY)]
            )
            if res.succeeded:
                self._key = mine
            else:
                got = res.results[0]
                assert isinstance(got, GetResult) and got.kvs
                self._key = got.kvs[0].value
        return self._key

    async def sign(self, who: str) -> str:
        now = self.clock.now()
        claims = {"sub": who, "iat": int(now), "exp": int(now + self.ttl_s), "aud": "console"}
        return jwt.encode(claims, await self.key(), algorithm="HS256")

    async def check(self, token: str) -> tuple[Session | None, str]:
        """The session a token names, or ``None`` with the reason."""
        if not token:
            return None, "not logged in: run `cloudless ui` for a login link"
        if len(token) > MAX_TOKEN:
            return None, "session cookie too long: run `cloudless ui` for a new login link"
        try:
            claims = jwt.decode(
                token,
                await self.key(),
                algorithms=["HS256"],
                audience="console",
                options={"verify_exp": False},
            )
        except jwt.PyJWTError as e:
            return None, f"session not valid ({e}): run `cloudless ui` for a new login link"
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self.clock.now():
            return None, "session expired: run `cloudless ui` for a new login link"
        sub, iat = claims.get("sub"), claims.get("iat")
        if not isinstance(sub, str) or not sub or not isinstance(iat, int):
            return None, "session names nobody: run `cloudless ui` for a new login link"
        return Session(sub, float(iat)), ""
