"""The ``TokenStore`` contract. Any implementation subclasses ``TokenStoreContract`` and
provides a ``store`` fixture returning a fresh, empty store; e.g. for an etcd-backed store::

    class TestEtcdTokenStore(TokenStoreContract):
        @pytest.fixture
        async def store(self, etcd): return EtcdTokenStore(etcd, prefix=...)
"""

from __future__ import annotations

import asyncio
import json

import pytest

from cloudless.lib.errors import Conflict
from cloudless.security.token_store import MarkOutcome, TokenRecord, TokenStore, TokenUse


def record(token_id: str = "tok-1", created_at: float = 100.0, **kw: object) -> TokenRecord:
    base: dict[str, object] = {
        "token_id": token_id,
        "use": TokenUse.NODE_ENROLLMENT,
        "secret_hash": b"$2b$04$abcdefghijklmnopqrstuuJ5b3qY2GSRQ3C1BCv7uV8rWZ4kS1YAe",
        "created_at": created_at,
        "expires_at": created_at + 86_400,
        "labels": {"zone": "home"},
        "description": "test",
    }
    base.update(kw)
    return TokenRecord(**base)  # type: ignore[arg-type]


class TokenStoreContract:
    @pytest.fixture
    def store(self) -> TokenStore:
        raise NotImplementedError("subclass and return a fresh store")

    async def test_save_then_get_roundtrips(self, store: TokenStore) -> None:
        r = record()
        await store.save(r)
        assert await store.get("tok-1") == r
        assert await store.get("tok-missing") is None

    async def test_save_existing_id_conflicts(self, store: TokenStore) -> None:
        await store.save(record())
        with pytest.raises(Conflict):
            await store.save(record(description="other"))

    async def test_mark_used_once(self, store: TokenStore) -> None:
        await store.save(record())
        first = await store.mark_used("tok-1", used_by="spiffe://cloudless/node/a", at=150.0)
        assert first.won and first.outcome is MarkOutcome.WON
        assert first.record is not None and first.record.used_at == 150.0
        second = await store.mark_used("tok-1", used_by="spiffe://cloudless/node/b", at=151.0)
        assert (second.won, second.outcome) == (False, MarkOutcome.ALREADY_USED)
        assert second.record is not None and second.record.used_by == "spiffe://cloudless/node/a"
        stored = await store.get("tok-1")
        assert stored is not None and (stored.used_at, stored.used_by) == (
            150.0,
            first.record.used_by,
        )

    async def test_concurrent_mark_used_has_exactly_one_winner(self, store: TokenStore) -> None:
        await store.save(record())
        results = await asyncio.gather(
            *(store.mark_used("tok-1", used_by=f"node-{i}", at=200.0 + i) for i in range(20))
        )
        winners = [r for r in results if r.won]
        assert len(winners) == 1
        assert {r.outcome for r in results if not r.won} == {MarkOutcome.ALREADY_USED}

    async def test_mark_used_missing_and_revoked(self, store: TokenStore) -> None:
        assert (await store.mark_used("nope", used_by="x", at=1.0)).outcome is MarkOutcome.NOT_FOUND
        await store.save(record())
        await store.revoke("tok-1", at=120.0, reason="leaked in chat")
        res = await store.mark_used("tok-1", used_by="x", at=130.0)
        assert (res.won, res.outcome) == (False, MarkOutcome.REVOKED)

    async def test_revoke_is_idempotent_and_keeps_first_reason(self, store: TokenStore) -> None:
        await store.save(record())
        a = await store.revoke("tok-1", at=120.0, reason="first")
        b = await store.revoke("tok-1", at=130.0, reason="second")
        assert a is not None and b is not None
        assert (b.revoked_at, b.revoked_reason) == (120.0, "first")
        assert await store.revoke("nope", at=1.0, reason="x") is None

    async def test_list_is_ordered_by_creation(self, store: TokenStore) -> None:
        for tid, at in (("tok-b", 300.0), ("tok-a", 100.0), ("tok-c", 100.0)):
            await store.save(record(tid, created_at=at))
        assert [r.token_id for r in await store.list()] == ["tok-a", "tok-c", "tok-b"]

    async def test_record_json_roundtrip(self, store: TokenStore) -> None:
        r = record(used_at=5.0, used_by="n", revoked_at=6.0, revoked_reason="x")
        assert TokenRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r
