"""Root rotation in three explicit steps, each safe to stop after.

1. ``begin_root_rotation`` — make the next root (kept as ``next-ca.crt``/``next-ca.key``) and
   start *trusting* it; the old root still issues. Bundles now carry both roots and reach
   every device with its next renewal (``Renewer`` stores the bundle it is given).
2. ``switch_to_next_root`` — the next root becomes the issuing root; the old one stays
   trusted, so every leaf it signed keeps working until renewed. Join tokens pin the new root
   digest from now on and tokens minted before the switch stop working (their signing key was
   derived from the old root): create new ones.
3. ``retire_root`` — once every leaf has been renewed (at most one leaf lifetime later), stop
   trusting the old root. Leaves it signed are refused from then on.

A switch made by ``cloudless ca rotate`` keeps the old root's key as ``previous-ca.key``
(``keep_previous_root``) until the old root is retired, so an abort can make it the issuing
root again (``switch_back``); ``forget_previous_root`` deletes it.

``rotation_status`` reports where a CA is. Every step persists before it returns.
``endorse`` certifies a new root with the issuing one, so a client that trusts only the old
root can accept the new one it is offered (``endorsed_roots``); ``cloudless ca rotate``
(``clusterops.rotation_runner``) drives these steps across a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from cloudless.security._files import write_private
from cloudless.security.bundle import TrustBundle, certificate_digest, load_pem_certificates
from cloudless.security.ca import (
    CERT_FILE,
    DEFAULT_ROOT_KEY_SIZE,
    EXTRA_ROOTS_FILE,
    KEY_FILE,
    CertificateAuthority,
    _pw,
    load_root_key,
    new_root,
)
from cloudless.security.errors import CaStateError
from cloudless.security.keys import private_key_pem

NEXT_CERT_FILE = "next-ca.crt"
NEXT_KEY_FILE = "next-ca.key"
PREVIOUS_CERT_FILE = "previous-ca.crt"
PREVIOUS_KEY_FILE = "previous-ca.key"


@dataclass(frozen=True)
class RotationStatus:
    issuing_digest: str
    next_digest: str | None  # set between begin and switch
    other_trusted: tuple[str, ...]  # trusted, not issuing (the old root after a switch)


def rotation_status(ca: CertificateAuthority) -> RotationStatus:
    nxt = ca.directory / NEXT_CERT_FILE
    next_digest = (
        certificate_digest(x509.load_pem_x509_certificate(nxt.read_bytes()))
        if nxt.exists()
        else None
    )
    others = tuple(d for d in ca.trust_bundle.digests if d not in (ca.digest, next_digest))
    return RotationStatus(ca.digest, next_digest, others)


def begin_root_rotation(
    ca: CertificateAuthority,
    *,
    root_key_size: int = DEFAULT_ROOT_KEY_SIZE,
    passphrase: bytes | str | None = None,
) -> bytes:
    """Create and trust the next root; returns its PEM. The current root keeps issuing."""
    d = ca.directory
    if (d / NEXT_CERT_FILE).exists() or (d / NEXT_KEY_FILE).exists():
        raise CaStateError(
            "a root rotation is already in progress: switch_to_next_root to continue it"
        )
    key, root = new_root(ca.trust_domain, ca.clock.now(), root_key_size)
    pem = root.public_bytes(serialization.Encoding.PEM)
    write_private(d / NEXT_KEY_FILE, private_key_pem(key, _pw(passphrase)))
    write_private(d / NEXT_CERT_FILE, pem)
    ca.add_trusted_root(pem)
    return pem


def switch_to_next_root(ca: CertificateAuthority, *, passphrase: bytes | str | None = None) -> None:
    """Make the next root the issuing root; the old root stays trusted."""
    d = ca.directory
    if not (d / NEXT_CERT_FILE).exists() or not (d / NEXT_KEY_FILE).exists():
        raise CaStateError("no root rotation in progress: begin_root_rotation first")
    key = load_root_key(d / NEXT_KEY_FILE, _pw(passphrase))
    root = x509.load_pem_x509_certificate((d / NEXT_CERT_FILE).read_bytes())
    if root.public_key() != key.public_key():
        raise CaStateError(f"{d / NEXT_CERT_FILE} and {d / NEXT_KEY_FILE} do not belong together")
    # persist "old root trusted" before the switch, so a crash never strands old leaves
    write_private(d / EXTRA_ROOTS_FILE, ca.trust_bundle.pem)
    write_private(d / KEY_FILE, (d / NEXT_KEY_FILE).read_bytes())
    write_private(d / CERT_FILE, (d / NEXT_CERT_FILE).read_bytes())
    ca._install_root(root, key)
    (d / NEXT_CERT_FILE).unlink()
    (d / NEXT_KEY_FILE).unlink()


def keep_previous_root(ca: CertificateAuthority) -> None:
    """Keep the issuing root's key and certificate as ``previous-ca.*`` (before a switch)."""
    d = ca.directory
    write_private(d / PREVIOUS_KEY_FILE, (d / KEY_FILE).read_bytes())
    write_private(d / PREVIOUS_CERT_FILE, (d / CERT_FILE).read_bytes())


def switch_back(ca: CertificateAuthority, digest: str) -> None:
    """Make the kept previous root (sha256 ``digest``) the issuing root again; the root
    issuing now stays trusted. Refused if the kept root is not that one."""
    d = ca.directory
    cert_path, key_path = d / PREVIOUS_CERT_FILE, d / PREVIOUS_KEY_FILE
    if not cert_path.exists() or not key_path.exists():
        raise CaStateError(
            f"{cert_path} is missing: this coordinator no longer holds the old root's key, so "
            "it cannot issue from it again; restore the CA directory from a backup"
        )
    root = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if certificate_digest(root) != digest:
        raise CaStateError(
            f"{cert_path} holds root {certificate_digest(root)[:16]}, not {digest[:16]}: "
            "refusing to switch back to another root"
        )
    write_private(d / NEXT_KEY_FILE, key_path.read_bytes())
    write_private(d / NEXT_CERT_FILE, cert_path.read_bytes())
    switch_to_next_root(ca)
    forget_previous_root(ca)


def forget_previous_root(ca: CertificateAuthority) -> None:
    for name in (PREVIOUS_KEY_FILE, PREVIOUS_CERT_FILE):
        (ca.directory / name).unlink(missing_ok=True)


def retire_root(ca: CertificateAuthority, digest: str) -> None:
    """Stop trusting a non-issuing root (after every leaf it signed has been renewed)."""
    ca.remove_trusted_root(digest)


def endorse(ca: CertificateAuthority, new: x509.Certificate) -> bytes:
    """The new root's subject and key certified by the issuing root: a client that trusts
    the old root can check a new root it is offered (``endorsed_roots``) with no other
    channel. (Not a chain for TLS: the roots are ``pathlen:0``.)"""
    old = ca.root
    cert = (
        x509.CertificateBuilder()
        .subject_name(new.subject)
        .issuer_name(old.subject)
        .public_key(new.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(new.not_valid_before_utc)
        .not_valid_after(min(new.not_valid_after_utc, old.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca._signing_key(), hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def endorsed_roots(
    offered: list[x509.Certificate], trusted: list[x509.Certificate], endorsements: bytes
) -> list[x509.Certificate]:
    """The offered roots we trust or that a trusted root endorsed (same subject and key)."""
    crosses = load_pem_certificates(endorsements) if endorsements.strip() else []
    out = []
    for root in offered:
        if any(certificate_digest(root) == certificate_digest(t) for t in trusted):
            out.append(root)
            continue
        for cross in crosses:
            if cross.subject != root.subject or cross.public_key() != root.public_key():
                continue
            if TrustBundle.of(trusted).issuer_of(cross) is not None:
                out.append(root)
                break
    return out
