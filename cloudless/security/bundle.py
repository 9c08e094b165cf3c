"""Trust bundles: the set of roots a Cloudless peer trusts.

A bundle holds one or more roots so that a root can be rotated without a flag day: during a
rotation the old and the new root are both trusted, leaves from either verify, and a bundle
with both is what every SSL context and gRPC credential is built from. ``issuer_of`` finds the
root that actually signed a leaf (by issuer name *and* signature), so two roots with the same
subject do not confuse it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from cloudless.security.errors import MalformedCertificate, SecurityError


def certificate_digest(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER encoding (what join tokens pin)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def load_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise MalformedCertificate(f"PEM bundle could not be parsed ({exc})") from None
    return certs


@dataclass(frozen=True)
class TrustBundle:
    roots: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.roots:
            raise SecurityError("a trust bundle needs at least one root certificate")
        for root in self.roots:
            bc = _basic_constraints(root)
            if bc is None or not bc.ca:
                raise SecurityError(
                    f"certificate {root.subject.rfc4514_string()} is not a CA "
                    "(basicConstraints CA:TRUE missing) and cannot be a trust root"
                )

    @classmethod
    def of(cls, roots: Iterable[x509.Certificate]) -> TrustBundle:
        uniq: dict[str, x509.Certificate] = {}
        for r in roots:
            uniq.setdefault(certificate_digest(r), r)
        return cls(tuple(uniq.values()))

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustBundle:
        return cls.of(load_pem_certificates(pem))

    @property
    def pem(self) -> bytes:
        return b"".join(r.public_bytes(serialization.Encoding.PEM) for r in self.roots)

    @functools.cached_property
    def digests(self) -> tuple[str, ...]:
        return tuple(certificate_digest(r) for r in self.roots)

    def with_root(self, root: x509.Certificate) -> TrustBundle:
        return TrustBundle.of((*self.roots, root))

    def issuer_of(self, leaf: x509.Certificate) -> x509.Certificate | None:
        """The root in this bundle that signed ``leaf``, or None."""
        for root in self.roots:
            if root.subject != leaf.issuer:
                continue
            try:
                leaf.verify_directly_issued_by(root)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return root
        return None


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def trust_report(cert_pem: bytes, ca_pem: bytes) -> tuple[list[str], str]:
    """What a device reports about its trust: the digests of the roots in its bundle, and of
    the one among them that signed its certificate ("" if none does)."""
    bundle = TrustBundle.from_pem(ca_pem)
    root = bundle.issuer_of(x509.load_pem_x509_certificate(cert_pem))
    return list(bundle.digests), certificate_digest(root) if root is not None else ""
