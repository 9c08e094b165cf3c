from __future__ import annotations

import random

import pytest
from cryptography import x509

from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.security.ca import BACKDATE_SECONDS, DAY, CertificateAuthority, CertKind
from cloudless.security.errors import (
    CertificateExpired,
    CertificateRevoked,
    IdentityMismatch,
    InvalidCsr,
    UntrustedCertificate,
)
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.revocation import RevocationList
from cloudless.security.rotation import Validity, renew_certificate, renewal_due
from tests.unit.security.helpers import cert, node_leaf


class FixedRng(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


V = Validity(0.0, 300 * DAY)  # a 300-day certificate starting at t=0

RENEWAL = [
    # now (days)  draw  fraction jitter  due    expired  renew_at (days)
    # 300*(2/3 - 0.05*0.0) = 200.0
    (199.9, 0.0, 2 / 3, 0.05, False, False, 200.0),
    (200.0, 0.0, 2 / 3, 0.05, True, False, 200.0),
    # 300*(2/3 - 0.05*1.0) = 185.0: the earliest any node renews with default jitter
    (186.0, 1.0, 2 / 3, 0.05, True, False, 185.0),
    # 300*(2/3 - 0.05*0.5) = 192.5
    (192.0, 0.5, 2 / 3, 0.05, False, False, 192.5),
    # 300*(0.5 - 0) = 150
    (150.0, 0.3, 0.5, 0.0, True, False, 150.0),
    # past notAfter: due and expired -> re-enrol
    (300.0, 0.0, 2 / 3, 0.05, True, True, 200.0),
]


@pytest.mark.parametrize(("now", "draw", "fraction", "jitter", "due", "expired", "at"), RENEWAL)
def test_renewal_due_table(
    now: float, draw: float, fraction: float, jitter: float, due: bool, expired: bool, at: float
) -> None:
    d = renewal_due(V, now * DAY, FixedRng(draw), fraction=fraction, jitter=jitter)
    assert (d.due, d.expired) == (due, expired), d.reason
    assert d.renew_at == pytest.approx(at * DAY)
    assert d.expires_at == 300 * DAY
    if expired:
        assert "re-enrol" in d.reason


def test_renewal_jitter_spreads_within_window() -> None:
    rng = random.Random(42)
    ats = [renewal_due(V, 0, rng).renew_at / DAY for _ in range(1000)]
    assert 185.0 <= min(ats) < 186.0 and 199.0 < max(ats) <= 200.0


def test_renewal_due_reads_a_real_certificate(ca: CertificateAuthority) -> None:
    leaf = node_leaf(ca, "n1")
    d = renewal_due(leaf.cert_pem, ca.clock.now(), FixedRng(0.0))
    # lifetime = 365 d + 300 s; renew at notBefore + 2/3 of it
    nb = ca.clock.now() - BACKDATE_SECONDS
    assert d.renew_at == pytest.approx(nb + (365 * DAY + BACKDATE_SECONDS) * 2 / 3)
    assert not d.due


@pytest.mark.parametrize(("fraction", "jitter"), [(0.0, 0.0), (1.0, 0.0), (0.5, 0.5), (0.5, -0.1)])
def test_renewal_parameters_validated(fraction: float, jitter: float) -> None:
    with pytest.raises(ValidationError):
        renewal_due(V, 0, random.Random(1), fraction=fraction, jitter=jitter)


def test_renew_issues_fresh_certificate_for_same_identity(
    ca: CertificateAuthority, clock: FakeClock
) -> None:
    sid = SpiffeId.node("n1")
    _, cur = ca.issue(sid, CertKind.NODE, dns_names=["n1.local"], ip_addresses=["10.0.0.1"])
    clock.advance(250 * DAY)
    new_key = new_private_key()
    new = cert(renew_certificate(ca, cur, make_csr(new_key, sid)))
    old = cert(cur)
    assert SpiffeId.from_certificate(new) == sid
    assert new.serial_number != old.serial_number
    assert new.public_key() != old.public_key()
    assert new.not_valid_after_utc.timestamp() == clock.now() + 365 * DAY

    def sans(c: x509.Certificate) -> list[str]:
        v = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(g.value) for g in v]

    assert sans(new) == sans(old)


def test_renew_refusals(
    ca: CertificateAuthority, foreign_ca: CertificateAuthority, clock: FakeClock
) -> None:
    sid = SpiffeId.node("n1")
    csr = make_csr(new_private_key(), sid)
    cur = node_leaf(ca, "n1").cert_pem
    with pytest.raises(IdentityMismatch, match="asks for spiffe://cloudless/node/n2"):
        renew_certificate(ca, cur, make_csr(new_private_key(), SpiffeId.node("n2")))
    with pytest.raises(UntrustedCertificate):
        renew_certificate(ca, node_leaf(foreign_ca, "n1").cert_pem, csr)
    with pytest.raises(InvalidCsr):
        renew_certificate(ca, cur, b"junk")
    rl = RevocationList()
    rl.revoke_certificate(cur, reason="removed", at=clock.now())
    with pytest.raises(CertificateRevoked):
        renew_certificate(ca, cur, csr, revocations=rl)
    clock.advance(366 * DAY)
    with pytest.raises(CertificateExpired, match="re-enrol"):
        renew_certificate(ca, cur, csr)
