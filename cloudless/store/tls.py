"""TLS material for etcd: file paths for the launcher, PEM bytes for the client.

Every member certificate carries ``ETCD_SERVER_NAME`` as a DNS SAN (plus the member's IP), so
a client holding several endpoints verifies all of them under one name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ETCD_SERVER_NAME = "etcd.cloudless.internal"


@dataclass(frozen=True)
class MemberTls:
    """A member's serving certificate (used for client and peer TLS, so it must allow both
    serverAuth and clientAuth) and the CA that signs members and clients."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ClientTls:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    server_name: str = ETCD_SERVER_NAME

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> ClientTls:
        return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())
