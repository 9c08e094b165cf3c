"""The GET path on one loopback node: local blocks sent with ``sendfile``, the next block
fetched ahead, small bodies answered whole; what a client sees when a block is bad or when it
goes away mid-body."""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from typing import Any
from urllib.parse import urlparse

import pytest
from botocore.exceptions import ClientError

from cloudless.objectstore.blocks import block_hash
from tests.integration.objectstore.conftest import S3Env


def test_multi_block_objects_and_ranges_read_back_exactly(s3: Any) -> None:
    s3.create_bucket(Bucket="getpath")
    data = os.urandom((3 << 20) + 12345)  # three full blocks and a tail
    s3.put_object(Bucket="getpath", Key="k", Body=data)
    assert s3.get_object(Bucket="getpath", Key="k")["Body"].read() == data
    # ranges: inside one block, across a boundary, across two, the tail, a suffix
    for lo, hi in [(10, 20), ((1 << 20) - 5, (1 << 20) + 5), (100, (2 << 20) + 100)]:
        got = s3.get_object(Bucket="getpath", Key="k", Range=f"bytes={lo}-{hi}")["Body"].read()
        assert got == data[lo : hi + 1]
    got = s3.get_object(Bucket="getpath", Key="k", Range="bytes=-70000")["Body"].read()
    assert got == data[-70000:]


def test_a_bad_block_of_a_small_object_is_an_s3_error_not_a_cut(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="smallrot")
    data = os.urandom(20_000)  # one block, over the inline limit, read whole before answering
    s3.put_object(Bucket="smallrot", Key="k", Body=data)
    s3env.node.node.blocks.path(block_hash(data)).write_bytes(bytes(len(data)))
    s3env.node.node.blocks.forget(block_hash(data))  # not held in memory: read from the file
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="smallrot", Key="k")
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert (s3env.node.node.blocks.root / "corrupt" / block_hash(data)).exists()


def test_a_damaged_inline_body_is_refused_not_served(
    s3env: S3Env, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An object small enough to live in its metadata row is checked against its ETag
    before it is served, as a block is against its hash (once per stored record: what was
    checked, or written, is held in memory keyed by the record's bytes)."""
    s3.create_bucket(Bucket="inlinerot")
    data = os.urandom(4096)
    s3.put_object(Bucket="inlinerot", Key="k", Body=data)
    meta = s3env.node.node.meta

    async def damage() -> None:
        (raw,) = meta.db.execute("SELECT value FROM objects WHERE pk = 'inlinerot/k'").fetchone()
        assert raw.endswith(data), "the body is stored raw after the record's head"
        bad = raw[: -len(data)] + bytes(len(data))
        meta.db.execute("UPDATE objects SET value = ? WHERE pk = 'inlinerot/k'", (bad,))
        meta.forget("objects", "inlinerot/k")

    s3env.node.call(damage())
    with caplog.at_level(logging.WARNING), pytest.raises(ClientError) as e:
        s3.get_object(Bucket="inlinerot", Key="k")
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert "does not match its ETag" in e.value.response["Error"]["Message"]
    assert "inline body does not match" in caplog.text
    s3.put_object(Bucket="inlinerot", Key="k", Body=data)  # an overwrite replaces it
    assert s3.get_object(Bucket="inlinerot", Key="k")["Body"].read() == data


def test_a_client_that_leaves_mid_body_is_not_a_server_error(
    s3env: S3Env, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s3.create_bucket(Bucket="leaver")
    data = os.urandom(8 << 20)
    s3.put_object(Bucket="leaver", Key="k", Body=data)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "leaver", "Key": "k"})
    u = urlparse(url)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        with socket.create_connection((u.hostname, u.port)) as sock:
            sock.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        # closed with most of the body unread
    with urllib.request.urlopen(url) as r:  # the node still serves
        assert r.read() == data
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_client_that_leaves_mid_upload_is_not_a_server_error(
    s3env: S3Env, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A PUT whose client goes away with half its body sent: nothing stored, nothing logged
    as an error (aiohttp logs a handler's ConnectionResetError with its traceback)."""
    s3.create_bucket(Bucket="quitter")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "quitter", "Key": "k"})
    u = urlparse(url)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        with socket.create_connection((u.hostname, u.port)) as sock:
            head = f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            sock.sendall(f"{head}Content-Length: {4 << 20}\r\n\r\n".encode())
            sock.sendall(os.urandom(2 << 20))
        # closed with half the body unsent
    time.sleep(0.5)  # the node notices each disconnect on its own thread
    with pytest.raises(ClientError):
        s3.head_object(Bucket="quitter", Key="k")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_an_unreachable_cluster_store_is_a_503_not_a_500(
    s3env: S3Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Access keys and buckets are looked up in the cluster store (through the coordinator
    on an agent): a node cut off from it answers ServiceUnavailable, which clients retry."""
    from cloudless.objectstore.s3.iam import Iam
    from cloudless.store.errors import Unavailable

    async def unreachable(self: Iam, key_id: str) -> None:
        raise Unavailable("no coordinator answered the store proxy")

    monkeypatch.setattr(Iam, "key", unreachable)
    with pytest.raises(ClientError) as e:
        s3env.client().list_buckets()
    assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert "unreachable" in e.value.response["Error"]["Message"]
