from __future__ import annotations

import stat
from pathlib import Path

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import DAY, CertificateAuthority
from cloudless.security.identity import SpiffeId
from cloudless.security.revocation import RevocationList
from tests.unit.security.helpers import node_leaf


def test_serial_and_identity_entries_roundtrip(
    ca: CertificateAuthority, clock: FakeClock, tmp_path: Path
) -> None:
    rl = RevocationList()
    a, b = node_leaf(ca, "a"), node_leaf(ca, "b")
    rl.revoke_certificate(a.cert_pem, reason="leaked", at=clock.now())
    rl.revoke_identity(SpiffeId.node("b"), reason="removed", at=clock.now())
    assert (rl.version, len(rl)) == (2, 2)
    assert rl.is_revoked(a.cert_pem) and rl.is_revoked(b.cert_pem)
    assert not rl.is_revoked(node_leaf(ca, "c").cert_pem)
    rl.save(tmp_path / "crl.json")
    assert stat.S_IMODE((tmp_path / "crl.json").stat().st_mode) == 0o600
    back = RevocationList.load(tmp_path / "crl.json")
    assert back.is_revoked(a.x509) and back.is_revoked(b.x509) and back.version == 2
    assert len(RevocationList.load(tmp_path / "absent.json")) == 0


def test_identity_revocation_spares_later_certificates(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    rl = RevocationList()
    before = node_leaf(ca, "n")
    clock.advance(10)
    rl.revoke_identity(SpiffeId.node("n"), reason="removed", at=clock.now())
    # issued at removal time: issued_at = notBefore + 300 = removal -> still revoked (<=)
    same_moment = node_leaf(ca, "n")
    clock.advance(1)
    after = node_leaf(ca, "n")
    assert rl.is_revoked(before.x509) and rl.is_revoked(same_moment.x509)
    assert not rl.is_revoked(after.x509)


def test_prune_drops_entries_for_expired_certificates(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    rl = RevocationList()
    rl.revoke_certificate(node_leaf(ca, "a").cert_pem, reason="x", at=clock.now())
    assert rl.prune(clock.now() + 364 * DAY) == 0
    assert rl.prune(clock.now() + 366 * DAY) == 1 and len(rl) == 0 and rl.version == 2
