"""EtcdStore's retry policy, decided per error (no server needed: the RPC is a stub)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from cloudless.lib.backoff import Backoff
from cloudless.store.errors import (
    Compacted,
    InvalidRequest,
    LeaseNotFound,
    OutcomeUnknown,
    StoreError,
    Unavailable,
)
from cloudless.store.etcd import EtcdStore
from cloudless.store.tls import ClientTls

U = grpc.StatusCode.UNAVAILABLE


def err(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details)


@pytest.fixture
async def store() -> AsyncIterator[EtcdStore]:
    s = EtcdStore(
        ["127.0.0.1:1"],
        ClientTls(b"", b"", b""),
        retry_for=0.2,
        backoff=Backoff(base=0.001, cap=0.002),
    )
    yield s
    await s.close()


@pytest.mark.parametrize(
    ("error", "idempotent", "outcome"),
    [
        # never left the client: safe to resend even a write -> succeeds on the 2nd try
        (err(U, "failed to connect to all addresses"), False, "ok"),
        (err(U, "Connection refused"), False, "ok"),
        # sent, answer lost: a write's fate is unknown; a read is simply retried
        (err(U, "etcdserver: request timed out"), False, OutcomeUnknown),
        (err(U, "Socket closed"), False, OutcomeUnknown),
        (err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False, OutcomeUnknown),
        (err(U, "etcdserver: request timed out"), True, "ok"),
        (TimeoutError(), False, OutcomeUnknown),
        (TimeoutError(), True, "ok"),
        # the member went away with the call open (a restart): as an answer lost
        (err(grpc.StatusCode.UNKNOWN, "No status received"), False, OutcomeUnknown),
        (err(grpc.StatusCode.UNKNOWN, "No status received"), True, "ok"),
        (err(grpc.StatusCode.INTERNAL, "Stream removed"), False, OutcomeUnknown),
        (err(grpc.StatusCode.INTERNAL, "Stream removed"), True, "ok"),
        (err(grpc.StatusCode.UNKNOWN, "Exception calling application"), True, StoreError),
        # refusals are mapped, never retried
        (
            err(grpc.StatusCode.OUT_OF_RANGE, "mvcc: required revision has been compacted"),
            True,
            Compacted,
        ),
        (
            err(grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
            False,
            LeaseNotFound,
        ),
        (
            err(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
            False,
            InvalidRequest,
        ),
        (
            err(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
            False,
            StoreError,
        ),
    ],
)
async def test_first_error_then_success(
    store: EtcdStore, error: BaseException, idempotent: bool, outcome: object
) -> None:
    calls = 0

    async def rpc() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return "done"

    if outcome == "ok":
        assert await store._call("op", rpc, idempotent=idempotent) == "done"
        assert calls == 2
    else:
        with pytest.raises(outcome):  # type: ignore[call-overload]
            await store._call("op", rpc, idempotent=idempotent)
        assert calls == 1


async def test_persistent_unavailability_becomes_unavailable(store: EtcdStore) -> None:
    async def rpc() -> str:
        raise err(U, "failed to connect to all addresses")

    with pytest.raises(Unavailable, match="quorum needs a majority"):
        await store._call("get", rpc, idempotent=True)
