"""Property: the token lifecycle matches a tiny model, whatever the order of operations.

Model per token: use, expiry, used?, revoked?. A consume attempt must fail with exactly the
error the model predicts (checks run: expiry, use, revoked, used) or succeed exactly once.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import (
    TokenAlreadyUsed,
    TokenError,
    TokenExpired,
    TokenRevoked,
    TokenWrongUse,
)
from cloudless.security.tokens import InMemoryTokenStore, TokenManager, TokenUse
from tests.unit.security.helpers import T0, make_ca

_CA_DIR = Path(tempfile.mkdtemp(prefix="cloudless-token-sm-"))
atexit.register(shutil.rmtree, _CA_DIR, True)
make_ca(_CA_DIR / "ca")


@dataclass
class Model:
    token: str
    token_id: str
    use: TokenUse
    expires_at: int
    used: bool = False
    revoked: bool = False


class TokenLifecycle(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock(T0 + 1000)
        ca = CertificateAuthority.load(_CA_DIR / "ca", clock=self.clock)
        self.tm = TokenManager(ca, InMemoryTokenStore(), self.clock, bcrypt_cost=4)
        self.tokens: list[Model] = []

    @rule(use=st.sampled_from(list(TokenUse)), ttl=st.integers(1, 500))
    def create(self, use: TokenUse, ttl: int) -> None:
        issued = asyncio.run(self.tm.create(use, ttl_seconds=ttl))
        exp = int(self.clock.now() + ttl)
        self.tokens.append(Model(issued.token, issued.record.token_id, use, exp))

    @rule(seconds=st.integers(0, 300))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.tokens)
    @rule(i=st.integers(0, 1000))
    def revoke(self, i: int) -> None:
        m = self.tokens[i % len(self.tokens)]
        asyncio.run(self.tm.revoke(m.token_id))
        m.revoked = True

    @precondition(lambda self: self.tokens)
    @rule(i=st.integers(0, 1000), use=st.sampled_from(list(TokenUse)))
    def consume(self, i: int, use: TokenUse) -> None:
        m = self.tokens[i % len(self.tokens)]
        expected: type[TokenError] | None
        if self.clock.now() >= m.expires_at:
            expected = TokenExpired
        elif use is not m.use:
            expected = TokenWrongUse
        elif m.revoked:
            expected = TokenRevoked
        elif m.used:
            expected = TokenAlreadyUsed
        else:
            expected = None
        try:
            claims = asyncio.run(self.tm.consume(m.token, use, consumer="x"))
        except TokenError as exc:
            assert type(exc) is expected, (exc, expected)
        else:
            assert expected is None and claims.token_id == m.token_id
            m.used = True

    @invariant()
    def store_agrees(self) -> None:
        if not hasattr(self, "tm"):
            return
        records = {r.token_id: r for r in asyncio.run(self.tm.list())}
        for m in self.tokens:
            r = records[m.token_id]
            assert (r.used_at is not None) == m.used
            assert (r.revoked_at is not None) == m.revoked


TestTokenLifecycle = TokenLifecycle.TestCase
TestTokenLifecycle.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
