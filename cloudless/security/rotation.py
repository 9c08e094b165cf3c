"""Certificate rotation: when to renew (pure) and the renewal itself (CA side).

``renewal_due`` decides with no I/O: renew once ``fraction`` of the lifetime has passed
(default 2/3), pulled earlier by up to ``jitter`` of the lifetime (default 5 %) using the
injected RNG, so that a thousand nodes enrolled in the same minute do not all renew in the
same minute. Call it once per certificate and keep ``renew_at`` (sleep until then on the
injected clock); calling it again draws new jitter, always within the same window.

Worked example, 365-day leaf, fraction 2/3, jitter 0.05, rng draw 0.5:
``renew_at = notBefore + 365 d * (2/3 - 0.05 * 0.5) = notBefore + 234.2 d``.

``renew_certificate`` issues a fresh certificate for an *existing* identity from a new CSR:
the current certificate (normally the mTLS peer certificate of the renewal RPC) must still
verify — this CA, not expired, not revoked — and the CSR must be for the same SPIFFE ID. The
new certificate keeps the kind and DNS/IP SANs of the current one. An expired certificate
cannot renew: the device re-enrols with a join token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cryptography import x509

from cloudless.lib.errors import ValidationError
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import load_certificate
from cloudless.security.keys import IpAddress
from cloudless.security.revocation import RevocationList
from cloudless.security.verify import Role, verify_certificate

DEFAULT_FRACTION = 2 / 3
DEFAULT_JITTER = 0.05


@dataclass(frozen=True)
class Validity:
    not_before: float
    not_after: float


@dataclass(frozen=True)
class RenewalDecision:
    due: bool
    expired: bool
    renew_at: float
    expires_at: float
    reason: str


def renewal_due(
    cert: x509.Certificate | bytes | Validity,
    now: float,
    rng: random.Random,
    *,
    fraction: float = DEFAULT_FRACTION,
    jitter: float = DEFAULT_JITTER,
) -> RenewalDecision:
    if not 0 < fraction < 1:
        raise ValidationError(f"fraction={fraction} must be between 0 and 1 (default 2/3)")
    if not 0 <= jitter < fraction:
        raise ValidationError(f"jitter={jitter} must be >= 0 and below fraction={fraction}")
    v = cert if isinstance(cert, Validity) else _validity(cert)
    lifetime = v.not_after - v.not_before
    renew_at = v.not_before + lifetime * (fraction - jitter * rng.random())
    if now >= v.not_after:
        return RenewalDecision(
            True,
            True,
            renew_at,
            v.not_after,
            "certificate has expired: renewal is no longer possible, re-enrol with a join token",
        )
    if now >= renew_at:
        left = v.not_after - now
        return RenewalDecision(True, False, renew_at, v.not_after, f"renew now: {left:.0f}s left")
    return RenewalDecision(
        False, False, renew_at, v.not_after, f"not yet: renew in {renew_at - now:.0f}s"
    )


def _validity(cert: x509.Certificate | bytes) -> Validity:
    c = load_certificate(cert)
    return Validity(c.not_valid_before_utc.timestamp(), c.not_valid_after_utc.timestamp())


def renew_certificate(
    ca: CertificateAuthority,
    current: x509.Certificate | bytes,
    csr_pem: bytes,
    *,
    revocations: RevocationList | None = None,
    ttl_seconds: int | None = None,
) -> bytes:
    """A fresh leaf (PEM) for the identity of ``current``, certifying the CSR's new key."""
    cur = load_certificate(current)
    peer = verify_certificate(
        cur,
        ca.trust_bundle,
        ca.clock.now(),
        role=Role.CLIENT,
        trust_domain=ca.trust_domain,
        revocations=revocations,
    )
    san = cur.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    cn = cur.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return ca.sign_csr(
        csr_pem,
        peer.spiffe_id,
        peer.spiffe_id.kind,
        ttl_seconds=ttl_seconds,
        dns_names=san.get_values_for_type(x509.DNSName),
        ip_addresses=[
            ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, IpAddress)
        ],
        common_name=str(cn[0].value) if cn else None,
    )
