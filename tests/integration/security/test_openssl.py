"""The real ``openssl`` binary agrees with our CA: chain, SPIFFE URI SAN, validity, purposes."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudless.lib.clock import SystemClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary absent")


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def _validity_days(text: str) -> float:
    fmt = "%b %d %H:%M:%S %Y GMT"
    nb = re.search(r"Not Before: (.+ GMT)", text)
    na = re.search(r"Not After : (.+ GMT)", text)
    assert nb and na, text
    start = dt.datetime.strptime(" ".join(nb.group(1).split()), fmt)
    end = dt.datetime.strptime(" ".join(na.group(1).split()), fmt)
    return (end - start).total_seconds() / 86_400


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Path]:
    d = tmp_path_factory.mktemp("ossl")
    ca = CertificateAuthority.init(d / "ca", clock=SystemClock(), root_key_size=4096)
    return ca, d


def test_openssl_verifies_node_certificate(pki: tuple[CertificateAuthority, Path]) -> None:
    ca, d = pki
    sid = SpiffeId.node("n1")
    key = new_private_key()
    (d / "node.crt").write_bytes(
        ca.sign_csr(
            make_csr(key, sid),
            sid,
            CertKind.NODE,
            dns_names=["n1.local"],
            ip_addresses=["127.0.0.1"],
        )
    )
    cafile = str(d / "ca" / "ca.crt")
    r = openssl("verify", "-CAfile", cafile, str(d / "node.crt"))
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), r.stdout + r.stderr
    for purpose in ("sslclient", "sslserver"):
        r = openssl("verify", "-purpose", purpose, "-CAfile", cafile, str(d / "node.crt"))
        assert r.returncode == 0, (purpose, r.stdout + r.stderr)

    leaf_text = openssl("x509", "-in", str(d / "node.crt"), "-noout", "-text").stdout
    assert "URI:spiffe://cloudless/node/n1" in leaf_text
    assert "DNS:n1.local" in leaf_text and "IP Address:127.0.0.1" in leaf_text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in leaf_text
    assert "CA:FALSE" in leaf_text
    # 365 days + the 300 s back-dating = 365.0035 days
    assert _validity_days(leaf_text) == pytest.approx(365 + 300 / 86_400, abs=1e-6)

    root_text = openssl("x509", "-in", cafile, "-noout", "-text").stdout
    assert "Public-Key: (4096 bit)" in root_text and "CA:TRUE" in root_text
    # 3650 days (10 years) + 300 s
    assert _validity_days(root_text) == pytest.approx(3650 + 300 / 86_400, abs=1e-6)


def test_openssl_rejects_user_cert_as_server_and_foreign_ca(
    pki: tuple[CertificateAuthority, Path],
) -> None:
    ca, d = pki
    _, user_pem = ca.issue(SpiffeId.user("alice"), CertKind.USER)
    (d / "user.crt").write_bytes(user_pem)
    cafile = str(d / "ca" / "ca.crt")
    assert (
        openssl(
            "verify", "-purpose", "sslclient", "-CAfile", cafile, str(d / "user.crt")
        ).returncode
        == 0
    )
    r = openssl("verify", "-purpose", "sslserver", "-CAfile", cafile, str(d / "user.crt"))
    assert r.returncode != 0 and "unsuitable certificate purpose" in r.stdout + r.stderr

    other = CertificateAuthority.init(d / "other", clock=SystemClock(), root_key_size=2048)
    _, foreign = other.issue(SpiffeId.node("n1"), CertKind.NODE)
    (d / "foreign.crt").write_bytes(foreign)
    r = openssl("verify", "-CAfile", cafile, str(d / "foreign.crt"))
    assert r.returncode != 0 and "unable to get local issuer certificate" in r.stdout + r.stderr
