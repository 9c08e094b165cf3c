"""What a storage or gateway node registers for the cluster's S3 service (``s3_gateway``):
its device's bridge address and S3 port, only while S3 serves on every address of a device
whose container network is up."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore.members import NODES
from cloudless.objectstore.service import NodeTls, StorageConfig, StorageService
from cloudless.store.memory import MemoryStore

CASES = [
    # (--s3-listen host, S3 serving, the device network's bridge address, registered)
    ("0.0.0.0", True, "10.42.1.1", "10.42.1.1:3900"),
    ("", True, "10.42.1.1", "10.42.1.1:3900"),  # "" binds every address too
    ("127.0.0.1", True, "10.42.1.1", ""),  # one address: the bridge address does not reach it
    ("192.168.1.5", True, "10.42.1.1", ""),
    ("0.0.0.0", False, "10.42.1.1", ""),  # no layout yet: S3 does not serve
    ("0.0.0.0", True, None, ""),  # no container network on the device
]


@pytest.mark.parametrize(("host", "serving", "gateway", "want"), CASES)
async def test_s3_gateway_registered(
    tmp_path: Path, host: str, serving: bool, gateway: str | None, want: str
) -> None:
    clock = FakeClock()
    store = MemoryStore(clock)
    cfg = StorageConfig(tmp_path, "home", 10**9, s3_host=host, s3_port=3900)
    tls = NodeTls("n1", "cluster.test", b"", b"", b"")
    svc = StorageService(cfg, tls, store, clock, gateway=lambda: gateway)
    svc._s3_serving = serving
    await svc._register()
    rec = await NODES.bind(store).get("n1")
    assert rec is not None and rec.value.s3_gateway == want
