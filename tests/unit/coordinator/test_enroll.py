"""``Enroller``: idempotent enrollment in one guarded transaction, on the in-memory store.

A ``LossyStore`` stands in for an etcd whose answer is lost: it applies (or does not apply)
a transaction and then raises ``OutcomeUnknown``, exactly what ``EtcdStore.txn`` does on a
timeout. The real-etcd path is exercised by ``tests/integration/cluster`` and
``python -m bench.enroll``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloudless.coordinator.agentapi.enrollment import (
    Action,
    Enroller,
    NodeIdTaken,
    NodeRemoved,
    csr_facts,
    decide,
)
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.ids import SequentialIds
from cloudless.model.node import Node, NodeState
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import (
    InvalidCsr,
    TokenAlreadyUsed,
    TokenRevoked,
    TokenSecretMismatch,
)
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.token_store import TokenRecord, TokenUse
from cloudless.security.tokens import TokenClaims, TokenManager
from cloudless.store.errors import OutcomeUnknown, Unavailable
from cloudless.store.memory import MemoryStore
from cloudless.store.tokens import StoreTokenStore
from cloudless.store.types import Compare, Get, TxnOp, TxnResult

T0 = 1_700_000_000.0
ENROL = TokenUse.NODE_ENROLLMENT


class LossyStore(MemoryStore):
    """Loses the answer of the next ``lose_applied`` write transactions after applying them,
    and of the next ``lose_unapplied`` before applying them; ``down`` fails everything."""

    lose_applied = 0
    lose_unapplied = 0
    down = False

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        if self.down:
            raise Unavailable("etcd unreachable (test)")
        writes = any(not isinstance(op, Get) for op in success)
        if writes and self.lose_unapplied:
            self.lose_unapplied -= 1
            raise OutcomeUnknown("etcd txn: timed out; the write may or may not have applied")
        res = await super().txn(compares, success, failure)
        if writes and self.lose_applied:
            self.lose_applied -= 1
            raise OutcomeUnknown("etcd txn: timed out; the write may or may not have applied")
        return res


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    CertificateAuthority.init(d, clock=FakeClock(T0), root_key_size=2048)
    return d


@dataclass
class Ctx:
    store: LossyStore
    state: ClusterState
    tokens: TokenManager
    enroller: Enroller
    ca: CertificateAuthority


@pytest.fixture
def ctx(ca_dir: Path) -> Ctx:
    clock = FakeClock(T0 + 1000)
    ca = CertificateAuthority.load(ca_dir, clock=clock)
    store = LossyStore(clock)
    state = ClusterState(store)
    token_store = StoreTokenStore(store)
    tokens = TokenManager(ca, token_store, clock, bcrypt_cost=4, ids=SequentialIds())
    enroller = Enroller(
        state=state, tokens=tokens, token_table=token_store.table, ca=ca, clock=clock
    )
    return Ctx(store, state, tokens, enroller, ca)


def node_for(node_id: str, claims: TokenClaims) -> Node:
    return Node.make(node_id, name=node_id, labels=claims.labels, state=NodeState.ENROLLING)


def csr(node_id: str, key: bytes | None = None) -> bytes:
    return make_csr(key or new_private_key(), SpiffeId.node(node_id))


async def events(ctx: Ctx) -> list[str]:
    return [r.value["message"] for r in (await ctx.state.events.list()).records]


async def test_first_enrollment_writes_token_node_and_event_together(ctx: Ctx) -> None:
    token = (await ctx.tokens.create(ENROL, labels={"zone": "attic"})).token
    req = csr("n1")
    done = await ctx.enroller.enroll(token, req, node_for)
    assert done.created and done.node.id == "n1" and done.node.labels["zone"] == "attic"
    assert SpiffeId.from_certificate(done.cert_pem) == SpiffeId.node("n1")
    (rec,) = await ctx.tokens.list()
    assert rec.used_by == "n1" and rec.used_by_key == csr_facts(req, ctx.ca.trust_domain).key
    assert (await ctx.state.nodes.get("n1")) is not None
    assert await events(ctx) == ["node n1 enrolled (n1, -)"]


async def test_retry_after_success_gets_a_certificate_and_writes_nothing(ctx: Ctx) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    req = csr("n1")
    await ctx.enroller.enroll(token, req, node_for)
    rev = await ctx.store.revision()
    again = await ctx.enroller.enroll(token, req, node_for)
    assert not again.created and again.node.id == "n1"
    assert SpiffeId.from_certificate(again.cert_pem) == SpiffeId.node("n1")
    assert await ctx.store.revision() == rev  # nothing written by the retry
    assert len(await events(ctx)) == 1


# (lost answers before/after applying, expected `created`, writes that landed)
LOST = [
    # applied, answer lost: the re-read finds the token used by us and the node -> DONE
    ("applied then lost", 1, 0, False),
    # lost before applying: the re-read finds the token unused -> write again -> created
    ("lost before applying", 0, 1, True),
    # lost before applying twice, then applied and lost: 3 tries, DONE on the 3rd re-read
    ("two unapplied then one applied", 1, 2, False),
]


@pytest.mark.parametrize(
    ("case", "applied", "unapplied", "created"), LOST, ids=[c[0] for c in LOST]
)
async def test_lost_answer_is_resolved_in_the_same_call(
    ctx: Ctx, case: str, applied: int, unapplied: int, created: bool
) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    ctx.store.lose_applied, ctx.store.lose_unapplied = applied, unapplied
    done = await ctx.enroller.enroll(token, csr("n1"), node_for)
    assert done.created is created and done.node.id == "n1"
    assert len((await ctx.state.nodes.list()).records) == 1
    assert len(await events(ctx)) == 1  # exactly one write landed in every case


async def test_store_down_fails_without_burning_the_token_then_the_retry_works(ctx: Ctx) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    req = csr("n1")
    ctx.store.down = True
    with pytest.raises(Unavailable):
        await ctx.enroller.enroll(token, req, node_for)
    ctx.store.down = False
    assert (await ctx.tokens.list())[0].used_at is None
    assert (await ctx.enroller.enroll(token, req, node_for)).created


async def test_retry_after_a_lost_call_answered_by_the_next_call(ctx: Ctx) -> None:
    """The agent's view: its first Enroll died (answer lost, even the re-read failed); its
    retry with the same CSR is a new call and must get the certificate."""
    token = (await ctx.tokens.create(ENROL)).token
    req = csr("n1")
    ctx.store.lose_applied = 1
    real_read = ctx.enroller._read
    calls = 0

    async def read_fails_after_the_lost_write(token_id: str, node_id: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:  # the re-read after OutcomeUnknown
            raise Unavailable("etcd unreachable (test)")
        return await real_read(token_id, node_id)

    ctx.enroller._read = read_fails_after_the_lost_write  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await ctx.enroller.enroll(token, req, node_for)
    again = await ctx.enroller.enroll(token, req, node_for)
    assert not again.created and SpiffeId.from_certificate(again.cert_pem) == SpiffeId.node("n1")


# Who presents a used token (first enrolled: node n1 with key K1), and the refusal.
REPLAYS = [
    ("another node id", "n2", False, TokenAlreadyUsed, "already used by n1; this request from n2"),
    ("same node id, another key", "n1", False, TokenAlreadyUsed, "with another key"),
]


@pytest.mark.parametrize(
    ("case", "node", "same_key", "err", "msg"), REPLAYS, ids=[r[0] for r in REPLAYS]
)
async def test_replayed_token_is_refused_for_anyone_else(
    ctx: Ctx, case: str, node: str, same_key: bool, err: type[CloudlessError], msg: str
) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    await ctx.enroller.enroll(token, csr("n1"), node_for)
    rev = await ctx.store.revision()
    with pytest.raises(err, match=msg):
        await ctx.enroller.enroll(token, csr(node), node_for)
    assert await ctx.store.revision() == rev


async def test_wrong_secret_is_refused_even_for_the_node_that_used_it(ctx: Ctx) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    req = csr("n1")
    await ctx.enroller.enroll(token, req, node_for)
    parts = token.split(":")
    parts[2] = "0" * 32
    with pytest.raises(TokenSecretMismatch):
        await ctx.enroller.enroll(":".join(parts), req, node_for)


def spoiled(csr_pem: bytes) -> bytes:
    """The same CSR with one bit of its signature flipped (still parses, no longer verifies)."""
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 1
    body = base64.encodebytes(bytes(der)).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "\n".join(["-----BEGIN CERTIFICATE REQUEST-----", *lines])
    return (pem + "\n-----END CERTIFICATE REQUEST-----\n").encode()


# bad CSRs: refused with a reason, the token stays unused
BAD_CSRS = [
    ("not PEM", lambda: b"garbage", CloudlessError, "not a PEM CSR"),
    ("signature does not verify", lambda: spoiled(csr("n1")), InvalidCsr, "does not verify"),
    ("a user, not a node", lambda: make_csr(new_private_key(), SpiffeId.user("eve")),
     CloudlessError, "a node of cloudless must be enrolled"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "err", "msg"), BAD_CSRS, ids=[b[0] for b in BAD_CSRS])
async def test_bad_csr_does_not_spend_the_token(
    ctx: Ctx, case: str, make: Callable[[], bytes], err: type[Exception], msg: str
) -> None:
    token = (await ctx.tokens.create(ENROL)).token
    with pytest.raises(err, match=msg):
        await ctx.enroller.enroll(token, make(), node_for)
    assert (await ctx.tokens.list())[0].used_at is None
    assert (await ctx.enroller.enroll(token, csr("n1"), node_for)).created


async def test_taken_node_id_and_removed_node(ctx: Ctx) -> None:
    t1, t2 = (await ctx.tokens.create(ENROL)).token, (await ctx.tokens.create(ENROL)).token
    req = csr("n1")
    await ctx.enroller.enroll(t1, req, node_for)
    with pytest.raises(NodeIdTaken, match="node id n1 is taken"):
        await ctx.enroller.enroll(t2, csr("n1"), node_for)
    assert (await ctx.tokens.list())[1].used_at is None  # the second token was not burnt
    await ctx.state.nodes.delete("n1")
    with pytest.raises(NodeRemoved, match="removed since"):
        await ctx.enroller.enroll(t1, req, node_for)


async def test_concurrent_requests_for_one_token(ctx: Ctx) -> None:
    """Ten different nodes race: exactly one enrolls. The winner's duplicate requests (same
    CSR, sent concurrently) all get certificates; one write in total."""
    token = (await ctx.tokens.create(ENROL)).token
    mine = csr("n0")
    reqs = [mine, mine, mine, *(csr(f"n{i}") for i in range(1, 10))]

    async def attempt(req: bytes) -> str:
        try:
            done = await ctx.enroller.enroll(token, req, node_for)
        except TokenAlreadyUsed:
            return "refused"
        return done.node.id

    got = await asyncio.gather(*(attempt(r) for r in reqs))
    winners = {g for g in got if g != "refused"}
    assert len(winners) == 1
    if winners == {"n0"}:  # 3 copies of n0's CSR, each answered; 9 others refused
        assert got.count("n0") == 3 and got.count("refused") == 9
    else:  # one other node won: all 11 others (n0's 3 copies included) refused
        assert got.count("refused") == 11
    assert len((await ctx.state.nodes.list()).records) == 1
    assert len(await events(ctx)) == 1


def rec(**kw: object) -> TokenRecord:
    base: dict[str, object] = dict(
        token_id="tok-1", use=ENROL, secret_hash=b"x", created_at=0.0, expires_at=99.0
    )
    return TokenRecord(**(base | kw))  # type: ignore[arg-type]


USED_BY_N1_K = dict(used_at=5.0, used_by="n1", used_by_key="K")
# (token record, node exists?, requester, key) -> action or refusal
DECIDE = [
    ("unused, no node -> write", rec(), False, "n1", "K", Action.WRITE),
    ("used by n1/K, node exists -> done", rec(**USED_BY_N1_K), True, "n1", "K", Action.DONE),
    ("used by n1/K, node gone", rec(**USED_BY_N1_K), False, "n1", "K", NodeRemoved),
    ("used by n1/K, asked n1/K2", rec(**USED_BY_N1_K), True, "n1", "K2", TokenAlreadyUsed),
    ("used by n1/K, asked n2/K", rec(**USED_BY_N1_K), False, "n2", "K", TokenAlreadyUsed),
    (
        "used by n1 (no key recorded)",
        rec(used_at=5.0, used_by="n1"),
        True,
        "n1",
        "K",
        TokenAlreadyUsed,
    ),
    ("unused, node exists", rec(), True, "n1", "K", NodeIdTaken),
    ("revoked", rec(revoked_at=3.0, revoked_reason="x"), False, "n1", "K", TokenRevoked),
]


@pytest.mark.parametrize(
    ("case", "token", "exists", "node", "key", "want"), DECIDE, ids=[d[0] for d in DECIDE]
)
def test_decide(
    case: str, token: TokenRecord, exists: bool, node: str, key: str, want: object
) -> None:
    if isinstance(want, Action):
        d = decide(token, exists, node_id=node, key=key, at=7.0)
        assert d.action is want
        if want is Action.WRITE:
            assert d.token is not None
            assert (d.token.used_at, d.token.used_by, d.token.used_by_key) == (7.0, node, key)
    else:
        with pytest.raises(want):  # type: ignore[call-overload]
            decide(token, exists, node_id=node, key=key, at=7.0)
