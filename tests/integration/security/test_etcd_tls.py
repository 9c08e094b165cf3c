"""Go's crypto/tls (inside a real etcd) accepts our certificates: P-256 leaves, RSA root,
serverAuth for etcd, clientAuth for its clients; a foreign CA's client is refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudless.lib.clock import SystemClock
from cloudless.security.ca import CertificateAuthority, CertKind
from cloudless.security.credentials import Credentials
from cloudless.security.identity import SpiffeId

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None or shutil.which("etcdctl") is None,
    reason="etcd/etcdctl binaries absent",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(d: Path, key: bytes, cert: bytes, bundle: bytes) -> Path:
    Credentials(key, cert, bundle).save(d)
    return d


class Etcd:
    def __init__(self, endpoint: str, cacert: Path) -> None:
        self.endpoint = endpoint
        self.cacert = cacert

    def ctl(self, creds: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "etcdctl",
                f"--endpoints={self.endpoint}",
                f"--cacert={self.cacert}",
                f"--cert={creds / 'tls.crt'}",
                f"--key={creds / 'tls.key'}",
                "--dial-timeout=3s",
                "--command-timeout=5s",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Path]:
    d = tmp_path_factory.mktemp("etcd-pki")
    ca = CertificateAuthority.init(d / "ca", clock=SystemClock(), root_key_size=2048)
    return ca, d


@pytest.fixture(scope="module")
def etcd(pki: tuple[CertificateAuthority, Path]) -> Iterator[Etcd]:
    ca, d = pki
    key, cert = ca.issue(
        SpiffeId.service("etcd"),
        CertKind.SERVICE,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
    )
    server = _write(d / "server", key, cert, ca.bundle_pem)
    client_port, peer_port = _free_port(), _free_port()
    endpoint = f"https://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    log = open(d / "etcd.log", "wb")  # closed in finally
    proc = subprocess.Popen(
        [
            "etcd",
            "--name=s1",
            f"--data-dir={d / 'data'}",
            f"--listen-client-urls={endpoint}",
            f"--advertise-client-urls={endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=s1={peer}",
            f"--cert-file={server / 'tls.crt'}",
            f"--key-file={server / 'tls.key'}",
            f"--trusted-ca-file={ca.directory / 'ca.crt'}",
            "--client-cert-auth",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    e = Etcd(endpoint, ca.directory / "ca.crt")
    k, c = ca.issue(SpiffeId.service("coordinator"), CertKind.SERVICE)
    probe = _write(d / "probe", k, c, ca.bundle_pem)
    try:
        deadline = time.monotonic() + 20
        while e.ctl(probe, "endpoint", "health").returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("etcd did not become healthy: " + (d / "etcd.log").read_text()[-2000:])
            time.sleep(0.2)
        yield e
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_etcd_accepts_our_node_certificate(
    pki: tuple[CertificateAuthority, Path], etcd: Etcd
) -> None:
    ca, d = pki
    key, cert = ca.issue(SpiffeId.node("n1"), CertKind.NODE)
    creds = _write(d / "n1", key, cert, ca.bundle_pem)
    put = etcd.ctl(creds, "put", "/cloudless/hello", "world")
    assert put.returncode == 0, put.stderr
    got = etcd.ctl(creds, "get", "--print-value-only", "/cloudless/hello")
    assert got.stdout.strip() == "world"


def test_etcd_refuses_a_foreign_ca_client(
    pki: tuple[CertificateAuthority, Path], etcd: Etcd
) -> None:
    ca, d = pki
    other = CertificateAuthority.init(d / "other", clock=SystemClock(), root_key_size=2048)
    key, cert = other.issue(SpiffeId.node("n1"), CertKind.NODE)
    creds = _write(d / "foreign", key, cert, ca.bundle_pem)
    r = etcd.ctl(creds, "--command-timeout=2s", "put", "/x", "y")
    assert r.returncode != 0
    # etcd's own log names the cause of the refusal
    log = (d / "etcd.log").read_text()
    assert "x509: certificate signed by unknown authority" in log
