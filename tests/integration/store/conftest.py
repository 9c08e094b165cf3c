from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudless.store.etcd_process import DEFAULT_ETCD
from cloudless.testing.etcd import TestPki


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    if shutil.which(DEFAULT_ETCD) is None:
        pytest.skip(f"{DEFAULT_ETCD} missing: apt-get install etcd-server")
    return TestPki(tmp_path / "pki")
