"""Builders shared by the security tests (unit, contract and integration).

``Pki`` wraps a CA plus the ability to mint deliberately *bad* certificates with the CA's own
key (wrong key usage, arbitrary validity), which the real API refuses to do.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_ca(
    directory: Path,
    *,
    key_size: int = 2048,
    td: str = "cloudless",
    start: float = T0,
    passphrase: bytes | None = None,
) -> CertificateAuthority:
    return CertificateAuthority.init(
        directory,
        trust_domain=td,
        clock=FakeClock(start),
        root_key_size=key_size,
        passphrase=passphrase,
    )


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


@dataclass
class Leaf:
    key_pem: bytes
    cert_pem: bytes

    @property
    def x509(self) -> x509.Certificate:
        return cert(self.cert_pem)


def node_leaf(ca: CertificateAuthority, node_id: str, **kw: object) -> Leaf:
    """A node certificate obtained the proper way: key here, CSR, CA signs."""
    sid = SpiffeId.node(node_id, ca.trust_domain)
    key = new_private_key()
    pem = ca.sign_csr(make_csr(key, sid), sid, CertKind.NODE, **kw)  # type: ignore[arg-type]
    return Leaf(key, pem)


def forged_leaf(
    ca: CertificateAuthority,
    spiffe_id: SpiffeId,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: float,
    not_after: float,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Leaf:
    """A leaf signed by ``ca``'s key with whatever usages and validity the test wants."""

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
    sans += [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.name)]))
        .issuer_name(ca.root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.fromtimestamp(not_before, dt.UTC))
        .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    c = b.sign(ca._signing_key(), hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Leaf(key_pem, c.public_bytes(serialization.Encoding.PEM))


SERVER_ONLY = [ExtendedKeyUsageOID.SERVER_AUTH]
CLIENT_ONLY = [ExtendedKeyUsageOID.CLIENT_AUTH]
