"""A client config's side of a root rotation: follow the cluster's trust, renew our own cert.

``refresh_trust`` fetches the roots a coordinator offers (``/v1/ca``) and the current
rotation's endorsement (``/v1/ca/endorsements``) over TLS that verifies nothing, then keeps
only the offered roots the config already trusts or that one of those endorsed
(``root_rotation.endorsed_roots``): an impostor cannot add a root, and a retired root drops
out. ``trust_also`` adds the root a rotation answer names (``cloudless ca rotate``, which
needs to trust it before coordinators switch). ``renew_self`` sends a CSR for a fresh key to
``POST /v1/users/renew`` and writes the new key, certificate and bundle.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from urllib.parse import urlsplit

from cryptography import x509

from cloudless.cli.client import Client, ClientConfig
from cloudless.lib.errors import CloudlessError
from cloudless.security._files import write_private
from cloudless.security.bundle import TrustBundle, certificate_digest, load_pem_certificates
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.root_rotation import endorsed_roots


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # what we read is checked against roots we trust
    return ctx


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, context=_unverified(), timeout=timeout) as r:
        data: bytes = r.read()
        return data


def refresh_trust(cfg: ClientConfig, timeout: float = 10.0) -> bool:
    """Bring ``cfg.ca_file`` to the roots the cluster trusts; whether it changed."""
    trusted = load_pem_certificates(cfg.ca_file.read_bytes())
    errors = []
    for server in cfg.servers:
        base = server.rstrip("/")
        if urlsplit(base).scheme != "https":
            continue
        try:
            info = json.loads(_get(f"{base}/v1/ca", timeout))
            endorsements = _get(f"{base}/v1/ca/endorsements", timeout)
        except (OSError, ValueError) as e:
            errors.append(f"{base}: {e}")
            continue
        offered = load_pem_certificates(str(info.get("ca_bundle_pem", "")).encode())
        kept = endorsed_roots(offered, trusted, endorsements)
        if not kept:
            raise CloudlessError(
                f"{base} offers no root that {cfg.ca_file} trusts or that a trusted root "
                "endorsed: the cluster's root was retired without this config, or this is "
                "not your cluster; get a new config from an admin"
            )
        new = TrustBundle.of(kept)
        if set(new.digests) == {certificate_digest(c) for c in trusted}:
            return False
        write_private(cfg.ca_file, new.pem)
        return True
    raise CloudlessError(f"no coordinator answered: {'; '.join(errors) or 'no https server'}")


def trust_also(cfg: ClientConfig, root_pem: bytes) -> None:
    """Add a root to the config's bundle (one received over an authenticated connection)."""
    current = TrustBundle.from_pem(cfg.ca_file.read_bytes())
    write_private(cfg.ca_file, current.with_root(x509.load_pem_x509_certificate(root_pem)).pem)


def own_issuer(cfg: ClientConfig) -> str:
    """Digest of the trusted root that signed our certificate ("" if none does)."""
    bundle = TrustBundle.from_pem(cfg.ca_file.read_bytes())
    root = bundle.issuer_of(x509.load_pem_x509_certificate(cfg.cert_file.read_bytes()))
    return certificate_digest(root) if root is not None else ""


def renew_self(cfg: ClientConfig) -> None:
    """A fresh key and certificate for the same identity, and the current trust bundle."""
    cert = x509.load_pem_x509_certificate(cfg.cert_file.read_bytes())
    uris = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    sid = SpiffeId.parse(uris[0])
    key = new_private_key()
    res = Client(cfg).call("POST", "/v1/users/renew", {"csr_pem": make_csr(key, sid).decode()})
    write_private(cfg.key_file.with_suffix(".new"), key)
    write_private(cfg.cert_file, str(res["cert_pem"]).encode())
    cfg.key_file.with_suffix(".new").replace(cfg.key_file)
    write_private(cfg.ca_file, str(res["ca_bundle_pem"]).encode())
