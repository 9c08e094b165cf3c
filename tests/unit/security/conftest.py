from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.security.ca import CertificateAuthority
from tests.unit.security.helpers import T0, make_ca


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ca")
    make_ca(d)  # RSA-2048 root for speed; the 4096 path is covered by test_ca/test_openssl
    return d


@pytest.fixture(scope="session")
def foreign_ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("foreign-ca")
    make_ca(d)
    return d


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 1000)


@pytest.fixture
def ca(ca_dir: Path, clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.load(ca_dir, clock=clock)


@pytest.fixture
def foreign_ca(foreign_ca_dir: Path, clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.load(foreign_ca_dir, clock=clock)
