"""``Expect: 100-continue``: a request is authenticated and its bucket permission checked
before the client sends its body; a refusal comes at once, and the connection is closed."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.integration.objectstore.conftest import S3Env


def presigned_put(client: Any, bucket: str, key: str) -> str:
    return str(
        client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
        )
    )


def head_of(sock: socket.socket) -> bytes:
    """One response's status line and headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def announce(url: str, size: int, expect: str = "100-continue") -> tuple[socket.socket, bytes]:
    """Send a PUT's headers announcing ``size`` bytes and wait for the server's first
    answer (the body is not sent)."""
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    target = f"{u.path}?{u.query}"
    sock.sendall(
        f"PUT {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {size}\r\n"
        f"Expect: {expect}\r\n\r\n".encode()
    )
    return sock, head_of(sock)


@pytest.fixture
def bucket(s3env: S3Env) -> str:
    c = s3env.client()
    try:
        c.create_bucket(Bucket="expect")
    except ClientError:
        pass
    return "expect"


def test_a_good_request_is_told_to_continue(s3env: S3Env, bucket: str) -> None:
    body = os.urandom(300_000)
    sock, first = announce(presigned_put(s3env.client(), bucket, "ok"), len(body))
    with sock:
        assert first.startswith(b"HTTP/1.1 100 Continue"), first
        sock.sendall(body)
        final = head_of(sock)
    assert final.startswith(b"HTTP/1.1 200"), final
    got = s3env.client().get_object(Bucket=bucket, Key="ok")["Body"].read()
    assert got == body


def tampered(url: str) -> str:
    head, _, sig = url.rpartition("X-Amz-Signature=")
    return head + "X-Amz-Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]


REFUSALS = [
    # (case, URL maker, status line, S3 error code)
    (
        "forged signature",
        lambda env: tampered(presigned_put(env.client(), "expect", "forged")),
        b"HTTP/1.1 403",
        b"SignatureDoesNotMatch",
    ),
    (
        "key without write permission",
        lambda env: presigned_put(env.client(env.other), "expect", "bob"),
        b"HTTP/1.1 403",
        b"AccessDenied",
    ),
    (
        "no such bucket",
        lambda env: presigned_put(env.client(), "no-such-bucket", "x"),
        b"HTTP/1.1 404",
        b"NoSuchBucket",
    ),
    (
        "unknown access key",
        lambda env: presigned_put(env.client(), "expect", "k").replace(
            env.key.key_id, "AKNOSUCHKEY0000000000"
        ),
        b"HTTP/1.1 403",
        b"InvalidAccessKeyId",
    ),
]


@pytest.mark.parametrize(
    ("url_of", "status", "code"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_a_refusal_comes_before_the_body(
    s3env: S3Env, bucket: str, url_of: Any, status: bytes, code: bytes
) -> None:
    sock, first = announce(url_of(s3env), 5 << 20)  # the 5 MiB body is never sent
    with sock:
        assert first.startswith(status), first
        rest = b""
        while chunk := sock.recv(4096):  # the server closes the connection after it
            rest += chunk
    assert code in first + rest
    listed = s3env.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert {o["Key"] for o in listed} <= {"ok", "big"}


def test_an_unknown_expectation_gets_417(s3env: S3Env, bucket: str) -> None:
    sock, first = announce(presigned_put(s3env.client(), bucket, "odd"), 10, expect="magic")
    with sock:
        assert first.startswith(b"HTTP/1.1 417"), first


def test_boto3_sends_expect_and_reads_the_refusal(s3env: S3Env, bucket: str) -> None:
    """botocore announces a file-like body with ``Expect: 100-continue``: the allowed key's
    upload goes through, the other key's gets its S3 error (not a broken pipe)."""
    body = os.urandom(2 << 20)
    s3env.client().put_object(Bucket=bucket, Key="big", Body=io.BytesIO(body))
    assert s3env.client().get_object(Bucket=bucket, Key="big")["Body"].read() == body
    with pytest.raises(ClientError) as e:
        s3env.client(s3env.other).put_object(Bucket=bucket, Key="big2", Body=io.BytesIO(body))
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_a_client_gone_before_its_continue_is_not_a_server_error(
    s3env: S3Env, bucket: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that announces a body and leaves while its request is checked: the "100
    Continue" finds the connection closing, which is dropped quietly (aiohttp logs a
    handler's ConnectionResetError as an ERROR with its traceback)."""
    server = s3env.node.node.server
    checking = server._precheck

    async def slow_check(request: Any) -> None:
        await checking(request)
        await asyncio.sleep(0.3)  # the client leaves meanwhile

    monkeypatch.setattr(server, "_precheck", slow_check)
    caplog.set_level(logging.WARNING)
    u = urlsplit(presigned_put(s3env.client(), bucket, "gone"))
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(
            f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 10\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
    time.sleep(0.8)  # the node answers on its own thread
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    monkeypatch.setattr(server, "_precheck", checking)
    s3env.client().put_object(Bucket=bucket, Key="after", Body=b"still serving")
