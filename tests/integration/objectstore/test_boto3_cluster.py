"""boto3 through the S3 fronts of three replicated nodes (R=3, mutual TLS between nodes):
written through one node, read through another, and still served with a node down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.testing import ThreadedCluster

GB = 10**9


@pytest.fixture
def tc(tmp_path: Path) -> Iterator[ThreadedCluster]:
    roles = {f"n{i}": NodeRole(f"zone{i}", 100 * GB) for i in range(1, 4)}
    c = ThreadedCluster(tmp_path, roles, replication=3)
    try:
        yield c
    finally:
        c.close()


def client(tc: ThreadedCluster, node: str, key: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=tc.endpoint(node),
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
        region_name="cloudless",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_write_on_one_node_read_on_another_and_survive_a_death(tc: ThreadedCluster) -> None:
    key = tc.call(tc.iam.create_key("alice"))
    s1, s2 = client(tc, "n1", key), client(tc, "n2", key)
    s1.create_bucket(Bucket="shared")
    big = os.urandom(2_500_000)
    s1.put_object(Bucket="shared", Key="big", Body=big)
    s1.put_object(Bucket="shared", Key="small", Body=b"hi")
    assert s2.get_object(Bucket="shared", Key="big")["Body"].read() == big
    tc.call(tc.cluster.kill("n1"))  # its peer server: n2 and n3 still make a quorum
    assert s2.get_object(Bucket="shared", Key="big")["Body"].read() == big
    s2.put_object(Bucket="shared", Key="after", Body=b"written with n1 down")
    keys = [c["Key"] for c in s2.list_objects_v2(Bucket="shared")["Contents"]]
    assert keys == ["after", "big", "small"]
