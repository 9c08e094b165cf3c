"""A single object-store node on loopback, driven by boto3 (synchronous) from the test thread
while the node runs its own event loop thread; three loopback nodes at R=3 (``cluster``);
``body``, an upload body in one piece."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cloudless.lib.clock import SystemClock
from cloudless.objectstore.node import ThreadedNode
from cloudless.objectstore.s3.iam import AccessKey
from cloudless.objectstore.testing import LoopbackCluster, running, three_zones
from cloudless.store.memory import MemoryStore

REGION = "cloudless"


@dataclass
class S3Env:
    node: ThreadedNode
    key: AccessKey
    other: AccessKey

    def client(self, key: AccessKey | None = None) -> Any:
        k = key or self.key
        return boto3.client(
            "s3",
            endpoint_url=self.node.endpoint,
            aws_access_key_id=k.key_id,
            aws_secret_access_key=k.secret,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )


@pytest.fixture(scope="module")
def s3env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Env]:
    node = ThreadedNode(
        tmp_path_factory.mktemp("s3node"),
        lambda: MemoryStore(SystemClock()),
        min_part_size=5 << 20,
    )
    try:
        yield S3Env(node, node.create_key("alice"), node.create_key("bob"))
    finally:
        node.close()


@pytest.fixture
def s3(s3env: S3Env) -> Any:
    return s3env.client()


async def body(data: bytes) -> AsyncIterator[bytes]:
    """An upload body in one piece."""
    yield data


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LoopbackCluster]:
    """Three loopback nodes, one per zone, R=3 (a test module may define its own)."""
    async with running(tmp_path, three_zones(), replication=3) as c:
        yield c
