"""SPIFFE identities for Cloudless: ``spiffe://<trust-domain>/<kind>/<name>``.

Kinds are ``node``, ``workload``, ``service`` and ``user``; the default trust domain is
``cloudless``. A ``SpiffeId`` is a validated value: constructing one that breaks the rules below
raises ``InvalidSpiffeId`` naming the offending part.

* trust domain: 1..255 chars of ``[a-z0-9._-]`` (SPIFFE spec), no port, user info, query or
  fragment;
* path: exactly ``/<kind>/<name>``; name is 1..255 chars of ``[A-Za-z0-9._-]`` and not
  ``.``/``..``.

An X.509 SVID carries exactly one ``spiffe://`` URI SAN; ``from_certificate`` enforces that.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from cryptography import x509

from cloudless.security.errors import InvalidSpiffeId, MalformedCertificate

DEFAULT_TRUST_DOMAIN = "cloudless"
SCHEME = "spiffe://"
_TD_RE = re.compile(r"^[a-z0-9._-]{1,255}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_MAX_URI = 2048


class CertKind(enum.StrEnum):
    """What a certificate identifies. Decides the key usages it gets (see ``ca``)."""

    NODE = "node"
    WORKLOAD = "workload"
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True, order=True)
class SpiffeId:
    trust_domain: str
    kind: CertKind
    name: str

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if not isinstance(self.kind, CertKind):
            raise InvalidSpiffeId(f"kind {self.kind!r} is not one of {_kinds()}")
        if not _NAME_RE.match(self.name) or self.name in (".", ".."):
            raise InvalidSpiffeId(
                f"{self.kind.value} name {self.name!r} is invalid: use 1-255 characters of "
                "letters, digits, '.', '-' or '_'"
            )

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def node(cls, node_id: str, td: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        return cls(td, CertKind.NODE, node_id)

    @classmethod
    def workload(cls, workload_id: str, td: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        return cls(td, CertKind.WORKLOAD, workload_id)

    @classmethod
    def service(cls, name: str, td: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        return cls(td, CertKind.SERVICE, name)

    @classmethod
    def user(cls, name: str, td: str = DEFAULT_TRUST_DOMAIN) -> SpiffeId:
        return cls(td, CertKind.USER, name)

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://td/kind/name``; every rule broken is named in the error."""
        if not isinstance(uri, str) or not uri:
            raise InvalidSpiffeId(
                "SPIFFE ID is empty: expected spiffe://<trust-domain>/<kind>/<name>"
            )
        if len(uri) > _MAX_URI:
            raise InvalidSpiffeId(f"SPIFFE ID is {len(uri)} characters; the limit is {_MAX_URI}")
        if not uri.startswith(SCHEME):
            raise InvalidSpiffeId(
                f"{uri!r} is not a SPIFFE ID: it must start with 'spiffe://' "
                "(e.g. spiffe://cloudless/node/n1)"
            )
        rest = uri[len(SCHEME) :]
        for bad, what in (
            ("?", "a query"),
            ("#", "a fragment"),
            ("@", "user info"),
            (":", "a port"),
        ):
            if bad in rest:
                raise InvalidSpiffeId(f"SPIFFE ID {uri!r} must not contain {what} ({bad!r})")
        td, sep, path = rest.partition("/")
        if not sep:
            raise InvalidSpiffeId(f"SPIFFE ID {uri!r} has no path: expected /<kind>/<name>")
        parts = path.split("/")
        if len(parts) != 2:
            raise InvalidSpiffeId(
                f"SPIFFE ID {uri!r} path must be exactly /<kind>/<name>, got {len(parts)} segments"
            )
        kind_s, name = parts
        try:
            kind = CertKind(kind_s)
        except ValueError:
            raise InvalidSpiffeId(
                f"SPIFFE ID {uri!r} has kind {kind_s!r}; expected one of {_kinds()}"
            ) from None
        return cls(td, kind, name)

    @classmethod
    def from_certificate(cls, cert: x509.Certificate | bytes | str) -> SpiffeId:
        """The single SPIFFE ID in a certificate's URI SANs (PEM, DER or parsed)."""
        c = load_certificate(cert)
        try:
            san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise InvalidSpiffeId(
                "certificate has no subjectAltName, so no SPIFFE ID: issue it from the Cloudless CA"
            ) from None
        uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
        spiffe = [u for u in uris if u.lower().startswith(SCHEME)]
        if len(spiffe) != 1:
            raise InvalidSpiffeId(
                f"certificate must carry exactly one spiffe:// URI SAN, found {len(spiffe)}"
            )
        return cls.parse(spiffe[0])

    # -- views ------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/{self.kind.value}/{self.name}"

    def __str__(self) -> str:
        return self.uri


def validate_trust_domain(trust_domain: str) -> None:
    if not isinstance(trust_domain, str) or not _TD_RE.match(trust_domain):
        raise InvalidSpiffeId(
            f"trust domain {trust_domain!r} is invalid: use 1-255 characters of "
            "lowercase letters, digits, '.', '-' or '_' (e.g. 'cloudless')"
        )


def load_certificate(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    """Accept a parsed certificate, PEM (str/bytes) or DER bytes."""
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else cert
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise MalformedCertificate(
            f"certificate could not be parsed ({exc}): expected PEM or DER"
        ) from None


def _kinds() -> str:
    return ", ".join(k.value for k in CertKind)
