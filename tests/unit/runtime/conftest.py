from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import AsyncIterator

import pytest

from tests.unit.runtime.fake_registry import FakeRegistry, digest_of


def tiny_layer() -> tuple[bytes, str]:
    """(gzipped layer, diff id) holding one file ``hello``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        data = b"hello\n" * 1000
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), digest_of(raw)


@pytest.fixture
async def fake_registry() -> AsyncIterator[FakeRegistry]:
    reg = FakeRegistry()
    await reg.start()
    yield reg
    await reg.stop()
