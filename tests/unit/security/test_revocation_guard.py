"""Long-lived sessions end the moment their certificate is revoked."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority
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
