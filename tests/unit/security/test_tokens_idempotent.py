"""Idempotent redemption: the consumer that used a token may redeem it again with the same
key (its first answer was lost); nobody else may. Run on the in-memory token store and on
``StoreTokenStore`` over the in-memory ``Store``."""

from __future__ import annotations

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.lib.ids import SequentialIds
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import TokenAlreadyUsed, TokenRevoked
from cloudless.security.token_store import (
    InMemoryTokenStore,
    MarkOutcome,
    TokenRecord,
    TokenStore,
    TokenUse,
    decide_mark,
)
from cloudless.security.tokens import TokenManager, check_state
from cloudless.store.memory import MemoryStore
from cloudless.store.tokens import StoreTokenStore

ENROL = TokenUse.NODE_ENROLLMENT


@pytest.fixture(params=["memory-token-store", "store-token-store"])
def tm(request: pytest.FixtureRequest, ca: CertificateAuthority, clock: FakeClock) -> TokenManager:
    store: TokenStore = (
        InMemoryTokenStore()
        if request.param == "memory-token-store"
        else StoreTokenStore(MemoryStore(clock))
    )
    return TokenManager(ca, store, clock, bcrypt_cost=4, ids=SequentialIds())


# second request (consumer, key) after n1 redeemed with key "K1" -> outcome
SECOND = [
    ("same node, same key: a retry", "n1", "K1", "ok"),
    ("same node, another key: stolen token", "n1", "K2", "with another key"),
    ("same node, no key", "n1", None, "no key fingerprint"),
    ("another node", "n2", "K1", "already used by n1; this request from n2"),
]


@pytest.mark.parametrize(("case", "who", "key", "want"), SECOND, ids=[s[0] for s in SECOND])
async def test_second_consume(
    tm: TokenManager, case: str, who: str, key: str | None, want: str
) -> None:
    token = (await tm.create(ENROL)).token
    await tm.consume(token, ENROL, consumer="n1", key="K1")
    if want == "ok":
        claims = await tm.consume(token, ENROL, consumer=who, key=key)
        assert claims.token_id == "tok-1"
    else:
        with pytest.raises(TokenAlreadyUsed, match=want):
            await tm.consume(token, ENROL, consumer=who, key=key)
    (rec,) = await tm.list()
    assert (rec.used_by, rec.used_by_key) == ("n1", "K1")  # the first redemption stays


async def test_without_keys_a_token_stays_strictly_one_time(tm: TokenManager) -> None:
    token = (await tm.create(ENROL)).token
    await tm.consume(token, ENROL, consumer="n1")
    with pytest.raises(TokenAlreadyUsed):
        await tm.consume(token, ENROL, consumer="n1")


async def test_revoked_after_use_refuses_even_the_retry(tm: TokenManager) -> None:
    token = (await tm.create(ENROL)).token
    await tm.consume(token, ENROL, consumer="n1", key="K1")
    await tm.revoke("tok-1")
    with pytest.raises(TokenRevoked):
        await tm.consume(token, ENROL, consumer="n1", key="K1")


def record(**kw: object) -> TokenRecord:
    base: dict[str, object] = dict(
        token_id="t", use=ENROL, secret_hash=b"h", created_at=0.0, expires_at=9.0
    )
    return TokenRecord(**(base | kw))  # type: ignore[arg-type]


# record, (used_by, key) asked -> mark outcome; written record's (used_by, used_by_key)
MARKS = [
    ("unused -> won, key kept", record(), ("n1", "K"), MarkOutcome.WON, ("n1", "K")),
    ("used n1/K, n1/K -> repeated", record(used_at=1.0, used_by="n1", used_by_key="K"),
     ("n1", "K"), MarkOutcome.REPEATED, ("n1", "K")),
    ("used n1/K, n1/K2 -> already", record(used_at=1.0, used_by="n1", used_by_key="K"),
     ("n1", "K2"), MarkOutcome.ALREADY_USED, ("n1", "K")),
    ("used n1 no key, n1/K -> already", record(used_at=1.0, used_by="n1"),
     ("n1", "K"), MarkOutcome.ALREADY_USED, ("n1", None)),
    ("used n1/K, n1 no key -> already", record(used_at=1.0, used_by="n1", used_by_key="K"),
     ("n1", None), MarkOutcome.ALREADY_USED, ("n1", "K")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "rec", "ask", "outcome", "after"), MARKS, ids=[m[0] for m in MARKS]
)
def test_decide_mark(
    case: str,
    rec: TokenRecord,
    ask: tuple[str, str | None],
    outcome: MarkOutcome,
    after: tuple[str, str | None],
) -> None:
    res = decide_mark(rec, used_by=ask[0], at=2.0, key=ask[1])
    assert res.outcome is outcome
    assert res.won is (outcome in (MarkOutcome.WON, MarkOutcome.REPEATED))
    assert res.record is not None and (res.record.used_by, res.record.used_by_key) == after


def test_record_roundtrips_the_key_and_reads_old_records() -> None:
    r = record(used_at=1.0, used_by="n1", used_by_key="ab" * 32)
    assert TokenRecord.from_dict(r.to_dict()) == r
    old = r.to_dict()
    del old["used_by_key"]  # written before the field existed
    assert TokenRecord.from_dict(old).used_by_key is None
    assert check_state(record()) is False
