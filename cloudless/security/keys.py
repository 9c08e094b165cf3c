"""Private keys and CSRs, made on the side that owns them (a private key never leaves it).

Default leaf key: **ECDSA P-256**. Why: it is supported by every TLS stack Cloudless talks
through (OpenSSL for asyncio, BoringSSL inside gRPC, Go's crypto/tls inside etcd and
containerd) for both TLS 1.2 and 1.3; generating one takes well under a millisecond (RSA-2048
takes tens to hundreds of milliseconds, painful on a phone or an IoT gateway); signatures are
small and fast. Ed25519 is faster still but is missing from some embedded TLS stacks and
hardware key stores, so it is accepted in CSRs but not the default.

Accepted CSR keys: EC P-256/P-384, RSA >= 2048 bits, Ed25519.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import NameOID

from cloudless.security.errors import SecurityError, UnsupportedKey
from cloudless.security.identity import SpiffeId

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class KeyType(enum.StrEnum):
    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"
    ED25519 = "ed25519"


DEFAULT_KEY_TYPE = KeyType.EC_P256
MIN_RSA_BITS = 2048


def generate_key(key_type: KeyType = DEFAULT_KEY_TYPE) -> CertificateIssuerPrivateKeyTypes:
    match key_type:
        case KeyType.EC_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyType.EC_P384:
            return ec.generate_private_key(ec.SECP384R1())
        case KeyType.RSA_2048:
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case KeyType.RSA_4096:
            return rsa.generate_private_key(public_exponent=65537, key_size=4096)
        case KeyType.ED25519:
            return ed25519.Ed25519PrivateKey.generate()
    raise UnsupportedKey(f"unknown key type {key_type!r}; use one of {[k.value for k in KeyType]}")


def new_private_key(key_type: KeyType = DEFAULT_KEY_TYPE) -> bytes:
    """A fresh private key as unencrypted PKCS#8 PEM (store it 0600)."""
    return private_key_pem(generate_key(key_type))


def private_key_pem(key: PrivateKeyTypes, passphrase: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def load_private_key(
    pem: bytes, passphrase: bytes | None = None
) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"private key could not be loaded: {exc}") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise UnsupportedKey(f"private key type {type(key).__name__} is not supported")
    return key


def check_public_key(key: CertificatePublicKeyTypes) -> None:
    """Raise ``UnsupportedKey`` unless the key is one Cloudless certifies."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ("secp256r1", "secp384r1"):
            raise UnsupportedKey(
                f"EC curve {key.curve.name} is not supported: use P-256 (default) or P-384"
            )
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnsupportedKey(
                f"RSA key of {key.key_size} bits is too small: use >= {MIN_RSA_BITS} "
                "bits, or better the default ECDSA P-256"
            )
        return
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    raise UnsupportedKey(
        f"key type {type(key).__name__} is not supported: use ECDSA P-256 (default), "
        "P-384, RSA >= 2048 or Ed25519"
    )


def signing_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """The hash to sign with: none for Ed25519 (it hashes internally), SHA-256 otherwise."""
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def make_csr(
    key_pem: bytes,
    spiffe_id: SpiffeId,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str | IpAddress] = (),
    passphrase: bytes | None = None,
) -> bytes:
    """A PEM CSR for ``spiffe_id`` signed by the key in ``key_pem``.

    The CSR carries the SPIFFE ID as its URI SAN (the CA refuses a CSR whose URI SAN names a
    different identity than the one being issued) and the requested DNS/IP SANs (the CA
    decides which SANs it actually grants).
    """
    key = load_private_key(key_pem, passphrase)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
    sans += [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, spiffe_id.name)]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, signing_hash(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)
