"""etcd's TLS material from the Cloudless CA.

Members get a *service* certificate ``spiffe://<td>/service/etcd-<name>`` (serverAuth and
clientAuth, because etcd uses it both to serve and to dial peers) with the member's IP and
``ETCD_SERVER_NAME`` as SANs. Clients (coordinators, tools) get a service certificate too.
etcd trusts the CA's bundle (two roots during a root rotation).
"""

from __future__ import annotations

import os
from pathlib import Path

from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.store.tls import ETCD_SERVER_NAME, ClientTls, MemberTls


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def member_tls(ca: CertificateAuthority, name: str, host: str, directory: Path) -> MemberTls:
    """Issue member ``name``'s certificate for ``host`` and write it (key 0600) under
    ``directory`` with the CA bundle."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = ca.issue(
        SpiffeId.service(f"etcd-{name}", ca.trust_domain),
        CertKind.SERVICE,
        dns_names=(ETCD_SERVER_NAME, "localhost"),
        ip_addresses=(host,),
    )
    tls = MemberTls(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
    _write(tls.ca_file, ca.bundle_pem, 0o644)
    _write(tls.cert_file, cert, 0o644)
    _write(tls.key_file, key, 0o600)
    return tls


def client_tls(ca: CertificateAuthority, name: str) -> ClientTls:
    """A client certificate ``spiffe://<td>/service/<name>`` for talking to etcd."""
    key, cert = ca.issue(SpiffeId.service(name, ca.trust_domain), CertKind.SERVICE)
    return ClientTls(ca.bundle_pem, cert, key)
