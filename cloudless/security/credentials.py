"""A principal's own credentials on disk: its key, its certificate and the trust bundle.

An agent keeps these after enrolment and replaces them on renewal. ``save`` writes every file
0600 in a 0700 directory (atomically, so a crash mid-renewal leaves the old or the new set,
never a key without its certificate: the certificate is written last and ``load`` checks the
pair matches); ``load`` refuses a key file others can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cloudless.security._files import check_private_file, ensure_private_dir, write_private
from cloudless.security.errors import CaStateError
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import load_private_key

KEY_FILE = "tls.key"
CERT_FILE = "tls.crt"
BUNDLE_FILE = "bundle.pem"


@dataclass(frozen=True)
class Credentials:
    key_pem: bytes
    cert_pem: bytes
    bundle_pem: bytes

    @property
    def spiffe_id(self) -> SpiffeId:
        return SpiffeId.from_certificate(self.cert_pem)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        ensure_private_dir(d)
        write_private(d / BUNDLE_FILE, self.bundle_pem)
        write_private(d / KEY_FILE, self.key_pem)
        write_private(d / CERT_FILE, self.cert_pem)

    @classmethod
    def load(cls, directory: str | Path) -> Credentials:
        d = Path(directory)
        missing = [f for f in (KEY_FILE, CERT_FILE, BUNDLE_FILE) if not (d / f).exists()]
        if missing:
            raise CaStateError(
                f"credentials in {d} are missing {', '.join(missing)}: enrol this device "
                "with a join token"
            )
        check_private_file(d / KEY_FILE)
        creds = cls(
            (d / KEY_FILE).read_bytes(),
            (d / CERT_FILE).read_bytes(),
            (d / BUNDLE_FILE).read_bytes(),
        )
        key = load_private_key(creds.key_pem)
        cert = x509.load_pem_x509_certificate(creds.cert_pem)
        if cert.public_key() != key.public_key():
            raise CaStateError(
                f"{d / CERT_FILE} does not belong to {d / KEY_FILE}: a renewal was interrupted; "
                "renew again or re-enrol"
            )
        return creds
