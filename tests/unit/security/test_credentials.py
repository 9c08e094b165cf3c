from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.credentials import Credentials
from cloudless.security.errors import CaStateError
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import new_private_key


def test_save_load_roundtrip_private(ca: CertificateAuthority, tmp_path: Path) -> None:
    key, cert = ca.issue(SpiffeId.node("n1"), CertKind.NODE)
    Credentials(key, cert, ca.bundle_pem).save(tmp_path / "creds")
    assert stat.S_IMODE((tmp_path / "creds").stat().st_mode) == 0o700
    for f in ("tls.key", "tls.crt", "bundle.pem"):
        assert stat.S_IMODE((tmp_path / "creds" / f).stat().st_mode) == 0o600
    back = Credentials.load(tmp_path / "creds")
    assert back.spiffe_id == SpiffeId.node("n1") and back.key_pem == key


def test_load_refusals(ca: CertificateAuthority, tmp_path: Path) -> None:
    with pytest.raises(CaStateError, match="enrol this device"):
        Credentials.load(tmp_path)
    key, cert = ca.issue(SpiffeId.node("n1"), CertKind.NODE)
    Credentials(new_private_key(), cert, ca.bundle_pem).save(tmp_path)
    with pytest.raises(CaStateError, match="does not belong"):
        Credentials.load(tmp_path)
    Credentials(key, cert, ca.bundle_pem).save(tmp_path)
    os.chmod(tmp_path / "tls.key", 0o644)
    with pytest.raises(CaStateError, match="chmod 600"):
        Credentials.load(tmp_path)


def test_ca_key_readable_by_others_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "ca"
    shutil.copytree(ca_dir, d)
    os.chmod(d / "ca.key", 0o640)
    with pytest.raises(CaStateError, match=r"mode 0640\): run `chmod 600"):
        CertificateAuthority.load(d)
