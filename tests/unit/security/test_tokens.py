"""Join tokens: mint, verify, consume once, list, revoke; every bad token gets its own error."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import jwt
import pytest

from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.lib.ids import SequentialIds
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.enrollment import enroll
from cloudless.security.errors import (
    CaDigestMismatch,
    IdentityMismatch,
    InvalidCsr,
    TokenAlreadyUsed,
    TokenError,
    TokenExpired,
    TokenForeignCluster,
    TokenMalformed,
    TokenNotFound,
    TokenRevoked,
    TokenSecretMismatch,
    TokenSignatureInvalid,
    TokenWrongUse,
)
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.tokens import (
    DEFAULT_TOKEN_TTL,
    InMemoryTokenStore,
    TokenManager,
    TokenUse,
    parse_token,
    pinned_ca,
)
from tests.unit.security.helpers import cert

ENROL = TokenUse.NODE_ENROLLMENT


@dataclass
class Ctx:
    tm: TokenManager
    foreign: TokenManager
    clock: FakeClock
    ca: CertificateAuthority


@pytest.fixture
def ctx(ca: CertificateAuthority, foreign_ca: CertificateAuthority, clock: FakeClock) -> Ctx:
    tm = TokenManager(ca, InMemoryTokenStore(), clock, bcrypt_cost=4, ids=SequentialIds())
    foreign = TokenManager(foreign_ca, InMemoryTokenStore(), clock, bcrypt_cost=4)
    return Ctx(tm, foreign, clock, ca)


async def test_create_and_verify(ctx: Ctx) -> None:
    issued = await ctx.tm.create(ENROL, labels={"zone": "attic"}, description="pi")
    p = parse_token(issued.token)
    assert p.ca_digest == ctx.ca.digest and len(p.secret) == 32
    rec = issued.record
    assert rec.token_id == "tok-1" and rec.secret_hash.startswith(b"$2b$04$")
    assert p.secret.encode() not in json.dumps(rec.to_dict()).encode()  # only the hash is kept
    assert rec.expires_at == int(ctx.clock.now()) + DEFAULT_TOKEN_TTL  # 24 h default
    claims = await ctx.tm.verify(issued.token, ENROL)
    assert (claims.token_id, claims.use, claims.labels) == ("tok-1", ENROL, {"zone": "attic"})
    assert (await ctx.tm.list())[0].state(ctx.clock.now()) == "active"


def _b64(d: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, object]:
    seg = parse_token(token).jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))  # type: ignore[no-any-return]


def _with_jwt(token: str, new_jwt: str) -> str:
    head, _, _ = token.rpartition(":")
    return f"{head}:{new_jwt}"


async def _expired(c: Ctx, t: str) -> str:
    c.clock.advance(DEFAULT_TOKEN_TTL)  # exactly at exp: no longer valid
    return t


async def _reused(c: Ctx, t: str) -> str:
    await c.tm.consume(t, ENROL, consumer="first")
    return t


async def _edited_claims(c: Ctx, t: str) -> str:
    h, _, s = parse_token(t).jwt.split(".")
    claims = _payload(t) | {"labels": {"role": "coordinator"}}  # escalate, keep old signature
    return _with_jwt(t, f"{h}.{_b64(claims)}.{s}")


async def _attacker_key(c: Ctx, t: str) -> str:
    return _with_jwt(t, jwt.encode(_payload(t), b"k" * 32, algorithm="HS256"))


async def _alg_none(c: Ctx, t: str) -> str:
    return _with_jwt(t, f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_payload(t))}.x")


async def _tampered_secret(c: Ctx, t: str) -> str:
    p = parse_token(t)
    flipped = ("1" if p.secret[0] == "0" else "0") + p.secret[1:]
    return t.replace(p.secret, flipped)


async def _foreign_cluster(c: Ctx, t: str) -> str:
    return (await c.foreign.create(ENROL)).token


async def _foreign_with_our_digest(c: Ctx, t: str) -> str:
    theirs = (await c.foreign.create(ENROL)).token
    return theirs.replace(c.foreign.ca.digest, c.ca.digest)


async def _wrong_use(c: Ctx, t: str) -> str:
    return (await c.tm.create(TokenUse.COORDINATOR_JOIN)).token


async def _revoked(c: Ctx, t: str) -> str:
    await c.tm.revoke("tok-1", reason="posted in chat")
    return t


async def _unknown(c: Ctx, t: str) -> str:
    c.tm.store = InMemoryTokenStore()  # e.g. minted against a wiped store
    return t


def _const(s: str) -> Callable[[Ctx, str], Awaitable[str]]:
    async def f(c: Ctx, t: str) -> str:
        return s

    return f


async def _bad_digest(c: Ctx, t: str) -> str:
    return t.replace(c.ca.digest, "Z" * 64)


async def _bad_jwt(c: Ctx, t: str) -> str:
    return _with_jwt(t, "not-a-jwt")


async def _bad_claims(c: Ctx, t: str) -> str:
    claims = {k: v for k, v in _payload(t).items() if k != "use"}
    return _with_jwt(t, jwt.encode(claims, c.ca.token_signing_key(), algorithm="HS256"))


BAD: list[tuple[str, Callable[[Ctx, str], Awaitable[str]], type[TokenError], str]] = [
    # case, how the token is spoiled, error, message fragment
    ("expired", _expired, TokenExpired, "expired 0s ago"),
    ("reused", _reused, TokenAlreadyUsed, "already used by first"),
    ("claims edited", _edited_claims, TokenSignatureInvalid, "altered or forged"),
    ("attacker's key", _attacker_key, TokenSignatureInvalid, "altered or forged"),
    ("alg none", _alg_none, TokenMalformed, "claims are invalid"),
    ("tampered secret", _tampered_secret, TokenSecretMismatch, "secret is wrong"),
    ("other cluster", _foreign_cluster, TokenForeignCluster, "another cluster"),
    ("other cluster, digest swapped", _foreign_with_our_digest, TokenSignatureInvalid, "forged"),
    ("wrong use", _wrong_use, TokenWrongUse, "is for coordinator-join, not node-enrollment"),
    ("revoked", _revoked, TokenRevoked, "posted in chat"),
    ("unknown id", _unknown, TokenNotFound, "unknown to this cluster"),
    ("empty", _const(""), TokenMalformed, "expected 'CLD1:<ca-digest>"),
    ("wrong prefix", _const("K10abc::node:secret"), TokenMalformed, "expected 'CLD1"),
    ("bad digest", _bad_digest, TokenMalformed, "CA digest must be 64"),
    ("bad jwt part", _bad_jwt, TokenMalformed, "header.payload.signature"),
    ("signed, missing claim", _bad_claims, TokenMalformed, 'missing the "use" claim'),
]


@pytest.mark.parametrize(("case", "spoil", "err", "msg"), BAD, ids=[b[0] for b in BAD])
async def test_bad_tokens(
    ctx: Ctx,
    case: str,
    spoil: Callable[[Ctx, str], Awaitable[str]],
    err: type[TokenError],
    msg: str,
) -> None:
    good = (await ctx.tm.create(ENROL)).token
    bad = await spoil(ctx, good)
    with pytest.raises(err) as exc:
        await ctx.tm.consume(bad, ENROL, consumer="n1")
    assert msg in str(exc.value)
    assert type(exc.value) is err  # the specific error, not a parent


async def test_two_concurrent_enrolments_exactly_one_wins(ctx: Ctx) -> None:
    token = (await ctx.tm.create(ENROL)).token

    async def attempt(node: str) -> str:
        csr = make_csr(new_private_key(), SpiffeId.node(node))
        try:
            e = await enroll(ctx.tm, ctx.ca, token=token, csr_pem=csr, node_id=node)
        except TokenAlreadyUsed:
            return "lost"
        assert SpiffeId.from_certificate(e.cert_pem) == SpiffeId.node(node)
        return "won"

    results = await asyncio.gather(attempt("a"), attempt("b"))
    assert sorted(results) == ["lost", "won"]
    (rec,) = await ctx.tm.list()
    assert rec.used_by in ("spiffe://cloudless/node/a", "spiffe://cloudless/node/b")


async def test_enrol_returns_pinned_labels_and_node_cert(ctx: Ctx) -> None:
    token = (await ctx.tm.create(ENROL, labels={"zone": "attic", "gpu": "no"})).token
    csr = make_csr(new_private_key(), SpiffeId.node("pi4"))
    e = await enroll(ctx.tm, ctx.ca, token=token, csr_pem=csr, node_id="pi4")
    assert e.labels == {"zone": "attic", "gpu": "no"} and e.token_id == "tok-1"
    c = cert(e.cert_pem)
    c.verify_directly_issued_by(ctx.ca.root)
    assert e.bundle_pem == ctx.ca.bundle_pem and e.spiffe_id.kind is CertKind.NODE


async def test_bad_csr_does_not_burn_the_token(ctx: Ctx) -> None:
    token = (await ctx.tm.create(ENROL)).token
    other = make_csr(new_private_key(), SpiffeId.node("someone-else"))
    with pytest.raises(IdentityMismatch):
        await enroll(ctx.tm, ctx.ca, token=token, csr_pem=other, node_id="n1")
    with pytest.raises(InvalidCsr):
        await enroll(ctx.tm, ctx.ca, token=token, csr_pem=b"junk", node_id="n1")
    good = make_csr(new_private_key(), SpiffeId.node("n1"))
    e = await enroll(ctx.tm, ctx.ca, token=token, csr_pem=good, node_id="n1")
    assert e.spiffe_id == SpiffeId.node("n1")


async def test_list_and_revoke(ctx: Ctx) -> None:
    a = await ctx.tm.create(ENROL)
    b = await ctx.tm.create(TokenUse.COORDINATOR_JOIN, ttl_seconds=60)
    await ctx.tm.consume(a.token, ENROL, consumer="n1")
    rec = await ctx.tm.revoke(b.record.token_id)
    assert rec.revoked_reason == "revoked by operator"
    now = ctx.clock.now()
    assert [(r.token_id, r.state(now)) for r in await ctx.tm.list()] == [
        ("tok-1", "used"),
        ("tok-2", "revoked"),
    ]
    c = await ctx.tm.create(ENROL, ttl_seconds=10)
    ctx.clock.advance(10)
    assert (await ctx.tm.list())[-1].state(ctx.clock.now()) == "expired"
    with pytest.raises(TokenNotFound, match="no join token tok-9"):
        await ctx.tm.revoke("tok-9")
    assert c.record.token_id == "tok-3"


async def test_pinned_ca(ctx: Ctx, foreign_ca: CertificateAuthority) -> None:
    token = (await ctx.tm.create(ENROL)).token
    assert pinned_ca(token, ctx.ca.ca_pem) == ctx.ca.ca_pem
    # a bundle with an impostor root next to the real one: only the pinned root comes back
    assert pinned_ca(token, foreign_ca.ca_pem + ctx.ca.ca_pem) == ctx.ca.ca_pem
    with pytest.raises(CaDigestMismatch, match="nothing was sent"):
        pinned_ca(token, foreign_ca.ca_pem)
    with pytest.raises(CaDigestMismatch, match="unreadable"):
        pinned_ca(token, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TokenMalformed):
        pinned_ca("garbage", ctx.ca.ca_pem)


@pytest.mark.parametrize("cost", [3, 32])
def test_bcrypt_cost_bounds(ctx: Ctx, cost: int) -> None:
    with pytest.raises(ValidationError, match=f"bcrypt_cost={cost}"):
        TokenManager(ctx.ca, InMemoryTokenStore(), ctx.clock, bcrypt_cost=cost)


async def test_create_validates_inputs(ctx: Ctx) -> None:
    with pytest.raises(ValidationError, match="ttl_seconds"):
        await ctx.tm.create(ENROL, ttl_seconds=0)
    with pytest.raises(ValidationError, match="label key"):
        await ctx.tm.create(ENROL, labels={"bad key": "x"})
