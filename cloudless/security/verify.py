"""Pure verification of a peer's leaf certificate against a trust bundle.

``verify_certificate`` answers "is this a live Cloudless SVID for this role?" with no I/O and
no clock of its own (``now`` is passed in). It raises the first refusal, in this order, each a
typed ``CertificateRejected``. Steps 1-3 (``verify_static``) do not depend on time and may be
cached per certificate; steps 4-6 (``check_live``) run on every use.

1. not issued by any root in the bundle          -> ``UntrustedCertificate``
2. a CA certificate, or missing the usage the role needs (digitalSignature, and
   clientAuth for a client, serverAuth for a server)   -> ``WrongKeyUsage``
3. no single valid SPIFFE URI SAN                -> ``InvalidSpiffeId``
4. outside its validity period                   -> ``CertificateExpired`` / ``NotYetValid``
5. another trust domain                          -> ``TrustDomainMismatch``
6. revoked (by serial or by identity)            -> ``CertificateRevoked``

The TLS libraries already check 1-3 during the handshake; doing it again here costs one
signature verification and means an authorizer decision never depends on how a context was
configured.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloudless.security.bundle import TrustBundle, certificate_digest
from cloudless.security.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    TrustDomainMismatch,
    UntrustedCertificate,
    WrongKeyUsage,
)
from cloudless.security.identity import SpiffeId
from cloudless.security.revocation import RevocationList


class Role(enum.StrEnum):
    """What the peer is doing on this connection: dialling us (client) or serving us."""

    CLIENT = "client"
    SERVER = "server"


_EKU_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
}


def _eku_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_NAMES.get(oid, oid.dotted_string)


_ROLE_EKU = {
    Role.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,
    Role.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
}


@dataclass(frozen=True)
class VerifiedPeer:
    spiffe_id: SpiffeId
    serial: int
    not_before: float
    not_after: float
    root_digest: str
    certificate: x509.Certificate


def verify_certificate(
    cert: x509.Certificate,
    bundle: TrustBundle,
    now: float,
    *,
    role: Role = Role.CLIENT,
    trust_domain: str | None = None,
    revocations: RevocationList | None = None,
) -> VerifiedPeer:
    peer = verify_static(cert, bundle, role)
    check_live(peer, now, trust_domain=trust_domain, revocations=revocations)
    return peer


def verify_static(cert: x509.Certificate, bundle: TrustBundle, role: Role) -> VerifiedPeer:
    """The time-independent part (root signature, usage, SPIFFE ID): safe to cache per
    (certificate, role, bundle)."""
    root = bundle.issuer_of(cert)
    if root is None:
        raise UntrustedCertificate(
            f"certificate for {cert.subject.rfc4514_string()} was not issued by this cluster's "
            f"CA (issuer {cert.issuer.rfc4514_string()}): enrol with this cluster to get one"
        )
    _check_usage(cert, role)
    sid = SpiffeId.from_certificate(cert)
    return VerifiedPeer(
        spiffe_id=sid,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        root_digest=certificate_digest(root),
        certificate=cert,
    )


def check_live(
    peer: VerifiedPeer,
    now: float,
    *,
    trust_domain: str | None = None,
    revocations: RevocationList | None = None,
) -> None:
    """The part that must be re-checked on every use: validity, trust domain, revocation."""
    if now > peer.not_after:
        raise CertificateExpired(
            f"certificate expired {now - peer.not_after:.0f}s ago (notAfter "
            f"{peer.certificate.not_valid_after_utc.isoformat()}): renew before expiry or "
            "re-enrol with a join token"
        )
    if now < peer.not_before:
        raise CertificateNotYetValid(
            f"certificate is not valid for another {peer.not_before - now:.0f}s: check this "
            "device's clock"
        )
    sid = peer.spiffe_id
    if trust_domain is not None and sid.trust_domain != trust_domain:
        raise TrustDomainMismatch(
            f"{sid} belongs to trust domain {sid.trust_domain!r}, expected {trust_domain!r}"
        )
    if revocations is not None:
        entry = revocations.check(peer.certificate, sid)
        if entry is not None:
            raise CertificateRevoked(f"certificate of {sid} is revoked ({entry.describe()})")


def _check_usage(cert: x509.Certificate, role: Role) -> None:
    exts = cert.extensions
    try:
        if exts.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise WrongKeyUsage("a CA certificate cannot be used as a peer identity")
    except x509.ExtensionNotFound:
        pass
    try:
        ku = exts.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            raise WrongKeyUsage("certificate keyUsage lacks digitalSignature, needed for TLS")
    except x509.ExtensionNotFound:
        pass
    want = _ROLE_EKU[role]
    try:
        eku = list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        raise WrongKeyUsage(
            f"certificate has no extendedKeyUsage; a {role.value} needs {_eku_name(want)}"
        ) from None
    if want not in eku:
        have = ", ".join(_eku_name(o) for o in eku) or "none"
        raise WrongKeyUsage(
            f"certificate may not act as a TLS {role.value}: it allows {have}, needs "
            f"{_eku_name(want)} (user and workload certificates are client-only)"
        )
