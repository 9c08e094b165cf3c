"""Virtual-host-style S3 (``Host: <bucket>.<domain>``) beside path style, with boto3.

The test resolves ``*.s3.test`` to the loopback node by wrapping urllib3's connect (no DNS
here); the node is given ``s3.test`` as its root domain, as ``--s3-domain`` does."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import boto3
import pytest
import urllib3.util.connection
from botocore.config import Config

from cloudless.objectstore.s3.server import host_bucket
from tests.integration.objectstore.conftest import REGION, S3Env

DOMAIN = "s3.test"

HOSTS = [
    # (Host header, root domains, bucket named, or None for path style)
    ("photos.s3.test", ("s3.test",), "photos"),
    ("photos.s3.test:3900", ("s3.test",), "photos"),
    ("Photos.S3.Test.", ("s3.test",), "photos"),
    ("my.dotted.bucket.s3.test", ("s3.test",), "my.dotted.bucket"),
    ("s3.test:3900", ("s3.test",), None),
    ("127.0.0.1:3900", ("s3.test",), None),
    ("[::1]:3900", ("s3.test",), None),
    ("photos.other.test", ("s3.test",), None),
    ("photos.s3.test", (), None),
    ("xs3.test", ("s3.test",), None),
    ("b.lan", ("s3.test", "lan"), "b"),
]


@pytest.mark.parametrize(("host", "domains", "bucket"), HOSTS)
def test_host_names_the_bucket(host: str, domains: tuple[str, ...], bucket: str | None) -> None:
    assert host_bucket(host, domains) == bucket


@pytest.fixture(scope="module")
def vhost(s3env: S3Env) -> Iterator[Any]:
    s3env.node.node.server.domains = (DOMAIN,)
    real = urllib3.util.connection.create_connection

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address
        if host == DOMAIN or host.endswith("." + DOMAIN):
            host = "127.0.0.1"
        return real((host, port), *args, **kwargs)

    with patch.object(urllib3.util.connection, "create_connection", connect):
        yield boto3.client(
            "s3",
            endpoint_url=f"http://{DOMAIN}:{s3env.node.port}",
            aws_access_key_id=s3env.key.key_id,
            aws_secret_access_key=s3env.key.secret,
            region_name=REGION,
            config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}),
        )


def test_boto3_virtual_host_round_trip(vhost: Any, s3env: S3Env) -> None:
    vhost.create_bucket(Bucket="vhosted")
    body = os.urandom(3 << 20)
    vhost.put_object(Bucket="vhosted", Key="dir/a b.bin", Body=body)
    vhost.upload_fileobj(io.BytesIO(body + body), "vhosted", "multi", Config=_multipart_config())
    assert vhost.get_object(Bucket="vhosted", Key="dir/a b.bin")["Body"].read() == body
    assert vhost.get_object(Bucket="vhosted", Key="multi")["Body"].read() == body + body
    listed = vhost.list_objects_v2(Bucket="vhosted")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/a b.bin", "multi"]
    url = vhost.generate_presigned_url(
        "get_object", Params={"Bucket": "vhosted", "Key": "multi"}, ExpiresIn=60
    )
    assert url.startswith(f"http://vhosted.{DOMAIN}:")
    # the same objects by path style, from a client that knows nothing of the domain
    path_style = s3env.client()
    assert path_style.get_object(Bucket="vhosted", Key="dir/a b.bin")["Body"].read() == body
    vhost.delete_object(Bucket="vhosted", Key="dir/a b.bin")
    vhost.delete_object(Bucket="vhosted", Key="multi")
    vhost.delete_bucket(Bucket="vhosted")


def _multipart_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
