"""Long-lived sessions end the moment their certificate is revoked."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.errors import PermissionDenied
from cloudless.security.identity import SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.tls import RevocationGuard
from tests.unit.security.helpers import node_leaf


async def _session(rl: RevocationList, pem: bytes, started: asyncio.Event) -> None:
    async with RevocationGuard(rl, pem):
        started.set()
        await asyncio.Event().wait()  # a stream that would run forever


async def test_revocation_ends_the_session(ca: CertificateAuthority, clock: FakeClock) -> None:
    rl = RevocationList()
    leaf = node_leaf(ca, "n1")
    started = asyncio.Event()
    task = asyncio.create_task(_session(rl, leaf.cert_pem, started))
    await started.wait()
    rl.revoke_certificate(node_leaf(ca, "n2").cert_pem, reason="other node", at=clock.now())
    await asyncio.sleep(0)
    assert not task.done()  # someone else's revocation does not touch this session
    rl.revoke_identity(SpiffeId.node("n1"), reason="node removed", at=clock.now())
    with pytest.raises(PermissionDenied, match="node removed") as exc:
        await task
    assert exc.value.reason_code == "certificate_revoked"
    assert rl._watchers == []  # unsubscribed


async def test_already_revoked_never_starts(ca: CertificateAuthority, clock: FakeClock) -> None:
    rl = RevocationList()
    leaf = node_leaf(ca, "n1")
    rl.revoke_certificate(leaf.cert_pem, reason="leaked", at=clock.now())
    with pytest.raises(PermissionDenied, match="leaked"):
        await _session(rl, leaf.cert_pem, asyncio.Event())
    assert rl._watchers == []


async def test_ordinary_cancellation_stays_a_cancellation(ca: CertificateAuthority) -> None:
    rl = RevocationList()
    started = asyncio.Event()
    task = asyncio.create_task(_session(rl, node_leaf(ca, "n1").cert_pem, started))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rl._watchers == []


async def test_expiry_ends_the_session(ca: CertificateAuthority, clock: FakeClock) -> None:
    rl = RevocationList()
    _, pem = ca.issue(SpiffeId.node("n1"), CertKind.NODE, ttl_seconds=100)
    started = asyncio.Event()

    async def session() -> None:
        async with RevocationGuard(rl, pem, clock=clock):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(session())
    await started.wait()
    await clock.run_for(99, step=1.0)
    assert not task.done()
    await clock.run_for(2, step=1.0)  # notAfter = issue + 100 s
    with pytest.raises(PermissionDenied, match="expired") as exc:
        await task
    assert exc.value.reason_code == "certificate_expired"
    assert clock.sleepers == 0


async def test_leaving_normally_stops_the_expiry_watch(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    rl = RevocationList()
    async with RevocationGuard(rl, node_leaf(ca, "n1").cert_pem, clock=clock) as guard:
        await asyncio.sleep(0)
        assert clock.sleepers == 1
    assert guard.ended is None and clock.sleepers == 0 and rl._watchers == []
    before = len(asyncio.all_tasks())
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before


async def test_race_mode_raises_without_cancelling(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    rl = RevocationList()
    leaf = node_leaf(ca, "n1")
    async with RevocationGuard(rl, leaf.cert_pem, cancel_task=False) as guard:
        assert await guard.race(asyncio.sleep(0, result="item")) == "item"
        slow = asyncio.Event()
        racing = asyncio.ensure_future(guard.race(slow.wait()))
        await asyncio.sleep(0)
        rl.revoke_identity(SpiffeId.node("n1"), reason="node removed", at=clock.now())
        with pytest.raises(PermissionDenied, match="node removed"):
            await racing
        with pytest.raises(PermissionDenied):
            guard.raise_if_ended()
        with pytest.raises(PermissionDenied):  # ended: the coroutine is closed, not leaked
            await guard.race(asyncio.sleep(0))
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
