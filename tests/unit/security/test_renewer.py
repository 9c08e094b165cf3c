"""The renewal loop, driven by a fake clock: no sleeping, no network."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import FakeClock
from cloudless.security.ca import BACKDATE_SECONDS, DAY, CertificateAuthority, CertKind
from cloudless.security.credentials import Credentials
from cloudless.security.errors import CertificateExpired
from cloudless.security.identity import SpiffeId
from cloudless.security.renewer import Renewer
from cloudless.security.rotation import renew_certificate
from tests.unit.security.helpers import cert


class FixedRng(random.Random):
    def random(self) -> float:
        return 0.0  # no jitter: renew exactly at 2/3; backoff delays exactly base*2^n


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def enrolled(ca: CertificateAuthority, d: Path, ttl: int | None = None) -> Credentials:
    key, pem = ca.issue(SpiffeId.node("n1"), CertKind.NODE, ttl_seconds=ttl)
    creds = Credentials(key, pem, ca.bundle_pem)
    creds.save(d)
    return creds


class Coordinator:
    """Stands in for the renewal RPC: fails ``fail`` times, then renews for real."""

    def __init__(self, ca: CertificateAuthority, d: Path, fail: int = 0) -> None:
        self.ca, self.d, self.fail, self.calls = ca, d, fail, 0

    async def renew(self, csr: bytes) -> tuple[bytes, bytes]:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("coordinator unreachable")
        current = Credentials.load(self.d).cert_pem  # the mTLS peer certificate
        return renew_certificate(self.ca, current, csr), self.ca.bundle_pem


async def test_renews_at_two_thirds_with_a_new_key(
    ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    old = enrolled(ca, tmp_path)
    coord = Coordinator(ca, tmp_path)
    seen: list[Credentials] = []
    r = Renewer(tmp_path, coord.renew, clock, FixedRng(), on_renewed=seen.append)
    # lifetime = 365 d + 300 s back-dating; renew at notBefore + 2/3 of it
    renew_in = (365 * DAY + BACKDATE_SECONDS) * 2 / 3 - BACKDATE_SECONDS
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(r.run())
        await settle()
        clock.advance(renew_in - 1)
        await settle()
        assert (r.renewals, coord.calls) == (0, 0)
        clock.advance(1)
        await settle()
        assert r.renewals == 1 and len(seen) == 1
        task.cancel()
    new = Credentials.load(tmp_path)
    assert new.key_pem != old.key_pem
    assert cert(new.cert_pem).serial_number != cert(old.cert_pem).serial_number
    assert new.spiffe_id == old.spiffe_id and seen[0] == new


async def test_retries_with_backoff_then_succeeds(
    ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    enrolled(ca, tmp_path, ttl=3 * DAY)
    coord = Coordinator(ca, tmp_path, fail=2)
    r = Renewer(tmp_path, coord.renew, clock, FixedRng(), backoff=Backoff(base=5, cap=60))
    renew_in = (3 * DAY + BACKDATE_SECONDS) * 2 / 3 - BACKDATE_SECONDS
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(r.run())
        await settle()
        clock.advance(renew_in)
        await settle()
        assert (coord.calls, r.failures) == (1, 1)
        clock.advance(5)  # first retry after 5 s
        await settle()
        assert (coord.calls, r.failures) == (2, 2)
        clock.advance(10)  # second retry after 10 s
        await settle()
        assert (coord.calls, r.renewals) == (3, 1)
        task.cancel()


async def test_gives_up_when_the_certificate_expires(
    ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    enrolled(ca, tmp_path, ttl=600)
    coord = Coordinator(ca, tmp_path, fail=10**6)
    r = Renewer(tmp_path, coord.renew, clock, FixedRng(), backoff=Backoff(base=5, cap=60))
    task = asyncio.ensure_future(r.run())
    await clock.run_for(1200, step=1.0)
    with pytest.raises(CertificateExpired, match="re-enrol with a join token"):
        await task
    assert r.renewals == 0 and coord.calls > 3


async def test_expired_certificate_cannot_renew(
    ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    enrolled(ca, tmp_path, ttl=60)
    clock.advance(61)
    r = Renewer(tmp_path, Coordinator(ca, tmp_path).renew, clock, FixedRng())
    with pytest.raises(CertificateExpired, match="re-enrol"):
        await r.run()
