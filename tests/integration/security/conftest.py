"""A real-time PKI for handshake tests: OpenSSL/BoringSSL check validity against the wall clock,
so the CA here is created in the (real) past and "expired" means expired for real."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock, SystemClock
from cloudless.security.ca import DAY, CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.tls import Authorizer
from tests.unit.security.helpers import SERVER_ONLY, Leaf, forged_leaf, node_leaf


@dataclass
class Pki:
    ca: CertificateAuthority
    server: Leaf  # spiffe://cloudless/service/coordinator, DNS localhost, IP 127.0.0.1
    clients: dict[str, Leaf]
    revocations: RevocationList = field(default_factory=RevocationList)

    def authorizer(self) -> Authorizer:
        return Authorizer(
            self.ca.trust_bundle,
            trust_domain="cloudless",
            revocations=self.revocations,
            clock=SystemClock(),
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    now = time.time()
    d = tmp_path_factory.mktemp("pki")
    CertificateAuthority.init(d / "ca", clock=FakeClock(now - 500 * DAY), root_key_size=2048)
    ca = CertificateAuthority.load(d / "ca", clock=SystemClock())
    past = CertificateAuthority.load(d / "ca", clock=FakeClock(now - 400 * DAY))
    foreign = CertificateAuthority.init(d / "foreign", clock=SystemClock(), root_key_size=2048)
    key, cert = ca.issue(
        SpiffeId.service("coordinator"),
        CertKind.SERVICE,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    revoked = node_leaf(ca, "n1")
    pki = Pki(
        ca=ca,
        server=Leaf(key, cert),
        clients={
            "valid": node_leaf(ca, "n1"),
            "foreign CA": node_leaf(foreign, "n1"),
            "expired": node_leaf(past, "n1"),  # issued 400 d ago for 365 d
            "revoked": revoked,
            "other node claims n1": node_leaf(ca, "n2"),
            "wrong key usage": forged_leaf(
                ca, SpiffeId.node("n1"), eku=SERVER_ONLY, not_before=now - 60, not_after=now + DAY
            ),
        },
    )
    pki.revocations.revoke_certificate(revoked.cert_pem, reason="node removed", at=now)
    return pki


@pytest.fixture
def ca_path(pki: Pki) -> Path:
    return pki.ca.directory
