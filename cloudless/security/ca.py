"""The built-in Certificate Authority.

Owns one self-signed root (RSA, 4096 bits by default, 10-year validity) and issues leaf
certificates from CSRs, so a private key never leaves its owner. Leaves carry exactly one
SPIFFE URI SAN, optional DNS/IP SANs (node and service certificates only: they are the ones
that serve), and the key usages their kind needs:

=========  ====================  =====================================
kind       extendedKeyUsage      why
=========  ====================  =====================================
node       serverAuth, clientAuth  agents serve (exec, logs) and dial
service    serverAuth, clientAuth  coordinator, etcd, registry …
workload   serverAuth, clientAuth  replicas do mutual TLS with each other
user       clientAuth            people only dial the platform
=========  ====================  =====================================

keyUsage is ``digitalSignature`` (+ ``keyEncipherment`` for RSA leaves), critical;
basicConstraints ``CA:FALSE``, critical. Leaves are back-dated by ``BACKDATE_SECONDS`` to absorb
clock skew between devices and never outlive the root.

State on disk (directory 0700, every file 0600): ``ca.crt`` (root), ``ca.key`` (PKCS#8, encrypted
with the passphrase when one is given), ``ca.json`` (trust domain, creation time) and, during a
root rotation, ``trusted-roots.pem`` (extra roots that are also trusted). After the first root
switch, ``secrets-root.key`` keeps the key of the *first* root: secrets keys stay derived from
it, so a root rotation does not make sealed secrets unreadable.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudless.lib.clock import Clock, SystemClock, utc
from cloudless.security._files import check_private_file, ensure_private_dir, write_private
from cloudless.security.bundle import TrustBundle, certificate_digest, load_pem_certificates
from cloudless.security.errors import (
    CaPassphraseError,
    CaStateError,
    IdentityMismatch,
    InvalidCsr,
    SecurityError,
    TrustDomainMismatch,
)
from cloudless.security.identity import (
    DEFAULT_TRUST_DOMAIN,
    CertKind,
    SpiffeId,
    validate_trust_domain,
)
from cloudless.security.keys import (
    DEFAULT_KEY_TYPE,
    IpAddress,
    KeyType,
    check_public_key,
    generate_key,
    private_key_pem,
)

__all__ = ["CertKind", "CertificateAuthority", "IssuedCertificate"]

DAY = 86_400
ROOT_TTL_SECONDS = 3650 * DAY  # 10 years
LEAF_TTL_SECONDS = 365 * DAY  # 1 year
BACKDATE_SECONDS = 300
DEFAULT_ROOT_KEY_SIZE = 4096

CERT_FILE = "ca.crt"
KEY_FILE = "ca.key"
META_FILE = "ca.json"
EXTRA_ROOTS_FILE = "trusted-roots.pem"
SECRETS_ROOT_FILE = "secrets-root.key"

SERVER_KINDS = frozenset({CertKind.NODE, CertKind.SERVICE})

_EKU = {
    CertKind.NODE: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    CertKind.SERVICE: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    CertKind.WORKLOAD: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    CertKind.USER: [ExtendedKeyUsageOID.CLIENT_AUTH],
}


def extended_key_usages(kind: CertKind) -> list[x509.ObjectIdentifier]:
    return list(_EKU[kind])


@dataclass(frozen=True)
class IssuedCertificate:
    key_pem: bytes
    cert_pem: bytes


class CertificateAuthority:
    """A loaded CA. Build with ``init`` (new root) or ``load`` (existing directory)."""

    def __init__(
        self,
        *,
        directory: Path,
        root: x509.Certificate,
        key: CertificateIssuerPrivateKeyTypes,
        trust_domain: str,
        extra_roots: tuple[x509.Certificate, ...] = (),
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.root = root
        self._key = key
        self.trust_domain = trust_domain
        self.clock: Clock = clock or SystemClock()
        self._extra_roots = extra_roots
        self._bundle: tuple[tuple[x509.Certificate, ...], TrustBundle] | None = None
        self._digest = certificate_digest(root)
        self._ski = x509.SubjectKeyIdentifier.from_public_key(root.public_key())
        # what ``_issue`` signs with, replaced as one (signing runs in worker threads)
        self._signer = (root, key, self._ski)
        # (key, root digest) that secrets keys are derived from: the first root's
        self._secrets_root: tuple[CertificateIssuerPrivateKeyTypes, str] = (key, self._digest)

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: str | Path,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        clock: Clock | None = None,
        root_key_size: int = DEFAULT_ROOT_KEY_SIZE,
        passphrase: bytes | str | None = None,
    ) -> CertificateAuthority:
        """Create a new root in ``directory``; refuses to overwrite an existing CA."""
        d = Path(directory)
        validate_trust_domain(trust_domain)
        if root_key_size < 2048 or root_key_size % 1024:
            raise SecurityError(
                f"root_key_size={root_key_size} is invalid: use 2048, 3072 or 4096 (default)"
            )
        if (d / KEY_FILE).exists() or (d / CERT_FILE).exists():
            raise CaStateError(
                f"a CA already exists in {d}: load it with CertificateAuthority.load, or "
                "choose an empty directory"
            )
        clock = clock or SystemClock()
        now = clock.now()
        key, root = new_root(trust_domain, now, root_key_size)
        ensure_private_dir(d)
        pw = _pw(passphrase)
        write_private(d / KEY_FILE, private_key_pem(key, pw))
        write_private(d / CERT_FILE, root.public_bytes(serialization.Encoding.PEM))
        meta = {"trust_domain": trust_domain, "created_at": now, "encrypted": pw is not None}
        write_private(d / META_FILE, json.dumps(meta, indent=2).encode())
        return cls(directory=d, root=root, key=key, trust_domain=trust_domain, clock=clock)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        passphrase: bytes | str | None = None,
        clock: Clock | None = None,
    ) -> CertificateAuthority:
        d = Path(directory)
        missing = [f for f in (CERT_FILE, KEY_FILE, META_FILE) if not (d / f).exists()]
        if missing:
            raise CaStateError(
                f"CA directory {d} is missing {', '.join(missing)}: create a CA with "
                "CertificateAuthority.init or point at the right directory"
            )
        try:
            meta = json.loads((d / META_FILE).read_text())
            trust_domain = str(meta["trust_domain"])
        except (ValueError, KeyError) as exc:
            raise CaStateError(f"{d / META_FILE} is corrupt ({exc})") from None
        key = load_root_key(d / KEY_FILE, _pw(passphrase))
        root = x509.load_pem_x509_certificate((d / CERT_FILE).read_bytes())
        if root.public_key() != key.public_key():
            raise CaStateError(f"{d / CERT_FILE} and {d / KEY_FILE} do not belong together")
        extra: tuple[x509.Certificate, ...] = ()
        if (d / EXTRA_ROOTS_FILE).exists():
            extra = tuple(load_pem_certificates((d / EXTRA_ROOTS_FILE).read_bytes()))
        ca = cls(
            directory=d,
            root=root,
            key=key,
            trust_domain=trust_domain,
            extra_roots=extra,
            clock=clock,
        )
        if (d / SECRETS_ROOT_FILE).exists():
            ca._secrets_root = _load_secrets_root(d / SECRETS_ROOT_FILE)
        return ca

    # -- public views ---------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the root's DER: what join tokens pin."""
        return self._digest

    @property
    def trust_bundle(self) -> TrustBundle:
        """This root plus any extra trusted roots (two at once during a root rotation)."""
        current = (self.root, *self._extra_roots)
        if self._bundle is None or self._bundle[0] != current:
            self._bundle = (current, TrustBundle.of(current))
        return self._bundle[1]

    @property
    def bundle_pem(self) -> bytes:
        return self.trust_bundle.pem

    def add_trusted_root(self, pem: bytes) -> None:
        """Also trust another root (e.g. the next or the previous one); persisted 0600."""
        roots = TrustBundle.of([*self._extra_roots, *load_pem_certificates(pem)]).roots
        self._set_extra_roots(tuple(r for r in roots if certificate_digest(r) != self._digest))

    def _set_extra_roots(self, roots: tuple[x509.Certificate, ...]) -> None:
        self._extra_roots = roots
        path = self.directory / EXTRA_ROOTS_FILE
        if roots:
            write_private(path, TrustBundle.of(roots).pem)
        elif path.exists():
            path.unlink()

    def remove_trusted_root(self, digest: str) -> None:
        """Stop trusting an extra root (never the issuing one); persisted."""
        if digest == self._digest:
            raise CaStateError("the issuing root cannot be untrusted: switch roots first")
        keep = [r for r in self._extra_roots if certificate_digest(r) != digest]
        if len(keep) == len(self._extra_roots):
            raise CaStateError(f"no extra trusted root with sha256 {digest[:16]}…")
        self._set_extra_roots(tuple(keep))

    def _install_root(self, root: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        """Switch the issuing root in memory; the previous one becomes an extra trusted root.

        ``root_rotation`` persists the files first (extra roots, then key, then cert)."""
        previous = self.root
        if not (self.directory / SECRETS_ROOT_FILE).exists():
            skey, sdigest = self._secrets_root
            pem = private_key_pem(skey)  # type: ignore[arg-type]
            write_private(self.directory / SECRETS_ROOT_FILE, sdigest.encode() + b"\n" + pem)
        self.root = root
        self._key = key
        self._digest = certificate_digest(root)
        self._ski = x509.SubjectKeyIdentifier.from_public_key(root.public_key())
        self._signer = (root, key, self._ski)
        self._set_extra_roots(
            tuple(
                r for r in (*self._extra_roots, previous) if certificate_digest(r) != self._digest
            )
        )

    def token_signing_key(self) -> bytes:
        """A 32-byte HMAC key for join tokens, derived from the root key (HKDF-SHA256).

        Only the holder of this cluster's root key can mint or verify tokens with it, so a
        token from another cluster fails signature checks even if its digest were forged.
        """
        ikm = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=bytes.fromhex(self._digest),
            info=b"cloudless/bootstrap-token/v1",
        )
        return hkdf.derive(ikm)

    def secrets_key(self, generation: int) -> bytes:
        """The 32-byte AES key of secrets generation ``generation`` (``security.secretbox``),
        derived from the root key like ``token_signing_key``: only coordinators hold it."""
        key, digest = self._secrets_root
        ikm = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=bytes.fromhex(digest),
            info=f"cloudless/secrets/v1/{generation}".encode(),
        )
        return hkdf.derive(ikm)

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` derived from the *issuing* root key (HKDF-SHA256):
        only coordinators holding this root can compute it."""
        ikm = self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=bytes.fromhex(self._digest),
            info=f"cloudless/{purpose}/v1".encode(),
        )
        return hkdf.derive(ikm)

    # -- issuance -----------------------------------------------------------------------------

    def sign_csr(
        self,
        csr_pem: bytes,
        spiffe_id: SpiffeId,
        kind: CertKind,
        ttl_seconds: int | None = None,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str | IpAddress] = (),
        common_name: str | None = None,
    ) -> bytes:
        """Sign a CSR for ``spiffe_id``; return the leaf as PEM.

        Refuses (typed errors): a CSR that does not parse or whose self-signature does not
        verify (``InvalidCsr``); an unsupported key (``UnsupportedKey``); a CSR whose URI SAN
        names another identity, or a kind that disagrees with the SPIFFE ID
        (``IdentityMismatch``); another trust domain (``TrustDomainMismatch``).
        """
        csr = self.check_csr(csr_pem, spiffe_id)
        return self._issue(
            csr.public_key(), spiffe_id, kind, ttl_seconds, dns_names, ip_addresses, common_name
        )

    def check_csr(self, csr_pem: bytes, spiffe_id: SpiffeId) -> x509.CertificateSigningRequest:
        """Everything ``sign_csr`` checks about the CSR itself, without signing (pure)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidCsr(f"CSR could not be parsed ({exc}): send a PEM CSR") from None
        if not csr.is_signature_valid:
            raise InvalidCsr(
                "CSR signature does not verify: it was altered or not signed by the key it "
                "carries; make a new CSR with your private key"
            )
        _check_csr_identity(csr, spiffe_id)
        check_public_key(csr.public_key())
        return csr

    def issue(
        self,
        spiffe_id: SpiffeId,
        kind: CertKind,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str | IpAddress] = (),
        ttl_seconds: int | None = None,
        key_type: KeyType = DEFAULT_KEY_TYPE,
        common_name: str | None = None,
    ) -> tuple[bytes, bytes]:
        """Make a key here and certify it: ``(key_pem, cert_pem)``.

        For certificates whose key lives next to the CA anyway (the coordinator's own, etcd's,
        the first admin's). Everything else goes through ``sign_csr``.
        """
        key = generate_key(key_type)
        cert = self._issue(
            key.public_key(), spiffe_id, kind, ttl_seconds, dns_names, ip_addresses, common_name
        )
        return private_key_pem(key), cert

    def _issue(
        self,
        public_key: CertificatePublicKeyTypes,
        spiffe_id: SpiffeId,
        kind: CertKind,
        ttl_seconds: int | None,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str | IpAddress],
        common_name: str | None,
    ) -> bytes:
        check_public_key(public_key)
        if spiffe_id.trust_domain != self.trust_domain:
            raise TrustDomainMismatch(
                f"{spiffe_id} is in trust domain {spiffe_id.trust_domain!r}, but this CA "
                f"serves {self.trust_domain!r}"
            )
        if spiffe_id.kind != kind:
            raise IdentityMismatch(
                f"{spiffe_id} is a {spiffe_id.kind.value} identity but a {kind.value} "
                "certificate was requested: use the matching kind"
            )
        dns = list(dict.fromkeys(dns_names))
        ips = list(dict.fromkeys(_ip(i) for i in ip_addresses))
        if (dns or ips) and kind not in SERVER_KINDS:
            raise SecurityError(
                f"DNS/IP SANs are only granted to node and service certificates, not to a "
                f"{kind.value} certificate: drop dns_names/ip_addresses"
            )
        ttl = LEAF_TTL_SECONDS if ttl_seconds is None else int(ttl_seconds)
        if ttl <= 0:
            raise SecurityError(f"ttl_seconds={ttl_seconds} must be positive")
        root, signing_key, ski = self._signer
        now = self.clock.now()
        not_after = min(utc(now + ttl), root.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id.uri)]
        sans += [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(i) for i in ips]
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name or spiffe_id.name),
                    ]
                )
            )
            .issuer_name(root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(utc(now - BACKDATE_SECONDS))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=is_rsa,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(extended_key_usages(kind)), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False
            )
        )
        cert = builder.sign(signing_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)

    def _signing_key(self) -> CertificateIssuerPrivateKeyTypes:
        """For tests and tools that must build unusual certificates with this root."""
        return self._key


def new_root(
    trust_domain: str, now: float, key_size: int = DEFAULT_ROOT_KEY_SIZE
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A fresh self-signed root: RSA ``key_size``, 10 years, ``CA:TRUE, pathlen:0``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cloudless"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Cloudless root CA {secrets.token_hex(4)}"),
        ]
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc(now - BACKDATE_SECONDS))
        .not_valid_after(utc(now + ROOT_TTL_SECONDS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, root


def load_root_key(path: Path, passphrase: bytes | None) -> rsa.RSAPrivateKey:
    """Read a root key, refusing one others can read; passphrase errors say what to do."""
    check_private_file(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except TypeError:
        if passphrase is None:
            raise CaPassphraseError(
                f"the CA key {path} is encrypted: pass its passphrase"
            ) from None
        raise CaPassphraseError(
            f"the CA key {path} is not encrypted: do not pass a passphrase"
        ) from None
    except ValueError:
        raise CaPassphraseError(
            f"could not decrypt the CA key {path}: the passphrase is wrong"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CaStateError(f"the CA key {path} is not an RSA key")
    return key


def _load_secrets_root(path: Path) -> tuple[CertificateIssuerPrivateKeyTypes, str]:
    """``secrets-root.key``: the first root's digest on one line, then its key (PEM)."""
    check_private_file(path)
    digest, _, pem = path.read_bytes().partition(b"\n")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError) as exc:
        raise CaStateError(f"{path} is corrupt ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CaStateError(f"{path} does not hold an RSA key")
    return key, digest.decode().strip()


def _check_csr_identity(csr: x509.CertificateSigningRequest, spiffe_id: SpiffeId) -> None:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if uris and uris != [spiffe_id.uri]:
        raise IdentityMismatch(
            f"CSR asks for {', '.join(uris)} but is being signed as {spiffe_id}: make the CSR "
            "for your own identity"
        )


def _ip(value: str | IpAddress) -> IpAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise SecurityError(f"ip_addresses: {value!r} is not an IP address") from None


def _pw(passphrase: bytes | str | None) -> bytes | None:
    if passphrase is None or passphrase in (b"", ""):
        return None
    return passphrase.encode() if isinstance(passphrase, str) else passphrase
