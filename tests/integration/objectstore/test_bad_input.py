"""Bad input over raw HTTP: every case gets its S3 error code and stores nothing.

Requests are signed by botocore's own SigV4 signer (not ours); chunk and trailer signatures
of ``aws-chunked`` bodies are computed here from the AWS specification.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import re
import zlib
from collections.abc import Callable
from typing import Any
from unittest.mock import patch
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.objectstore.conftest import REGION, S3Env

EMPTY = hashlib.sha256(b"").hexdigest()
BUCKET = "badinput"


def send(
    env: S3Env, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", env.node.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read().decode(errors="replace")
    finally:
        conn.close()
    m = re.search(r"<Code>([^<]+)</Code>", data)
    return resp.status, m.group(1) if m else ""


def signed(
    env: S3Env,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    payload: str | None = None,
    when: dt.datetime | None = None,
    secret: str | None = None,
    key_id: str | None = None,
) -> tuple[dict[str, str], str]:
    """Headers botocore signs for this request (and the seed signature)."""

    class Auth(S3SigV4Auth):
        def payload(self, request: Any) -> str:
            return payload if payload is not None else str(super().payload(request))

    req = AWSRequest(method=method, url=env.node.endpoint + path, data=body, headers=headers or {})
    creds = Credentials(key_id or env.key.key_id, secret or env.key.secret)
    stamp = when or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with patch("botocore.auth.get_current_datetime", return_value=stamp):
        Auth(creds, "s3", REGION).add_auth(req)
    out = {k: v for k, v in req.headers.items()}
    sig = re.search(r"Signature=([0-9a-f]{64})", out["Authorization"])
    assert sig
    return out, sig.group(1)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put(
    env: S3Env, path: str, body: bytes, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, str]:
    h, _ = signed(env, "PUT", path, body, headers, **kw)
    return send(env, "PUT", path, body, h)


def get(env: S3Env, path: str, **kw: Any) -> tuple[int, str]:
    h, _ = signed(env, "GET", path, **kw)
    return send(env, "GET", path, b"", h)


def chunked_body(
    env: S3Env, path: str, pieces: list[bytes], *, corrupt: int | None = None, cut: int = 0
) -> tuple[int, str]:
    """A STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload; ``corrupt`` alters that chunk after
    signing, ``cut`` drops that many bytes off the end."""
    decoded = sum(len(p) for p in pieces)
    headers = {"x-amz-decoded-content-length": str(decoded), "Content-Encoding": "aws-chunked"}
    stamp = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    h, seed = signed(
        env, "PUT", path, b"", headers, payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD", when=stamp
    )
    amz_date = h["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    k = hmac.new(f"AWS4{env.key.secret}".encode(), amz_date[:8].encode(), hashlib.sha256).digest()
    for part in (REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    body, prev = b"", seed
    for i, data in enumerate([*pieces, b""]):
        sts = "\n".join(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                amz_date,
                scope,
                prev,
                EMPTY,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        prev = sig
        sent = data if i != corrupt else bytes([data[0] ^ 1]) + data[1:]
        body += f"{len(data):x};chunk-signature={sig}\r\n".encode() + sent + b"\r\n"
    if cut:
        body = body[:-cut]
    h["Content-Length"] = str(len(body))
    return send(env, "PUT", path, body, h)


def trailer_body(env: S3Env, path: str, data: bytes, crc: str) -> tuple[int, str]:
    """A STREAMING-UNSIGNED-PAYLOAD-TRAILER upload carrying ``x-amz-checksum-crc32: crc``."""
    headers = {
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    h, _ = signed(env, "PUT", path, b"", headers, payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    body = (
        f"{len(data):x}\r\n".encode()
        + data
        + b"\r\n0\r\n"
        + f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
    )
    h["Content-Length"] = str(len(body))
    return send(env, "PUT", path, body, h)


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture(scope="module")
def env(s3env: S3Env) -> S3Env:
    s3env.client().create_bucket(Bucket=BUCKET)
    return s3env


def test_valid_streaming_bodies_are_accepted(env: S3Env) -> None:
    pieces = [b"a" * 70_000, b"b" * 70_000, b"c" * 10]
    assert chunked_body(env, f"/{BUCKET}/chunked-ok", pieces) == (200, "")
    assert trailer_body(
        env, f"/{BUCKET}/trailer-ok", b"hello trailer", crc32(b"hello trailer")
    ) == (200, "")
    s3 = env.client()
    assert s3.get_object(Bucket=BUCKET, Key="chunked-ok")["Body"].read() == b"".join(pieces)
    assert s3.get_object(Bucket=BUCKET, Key="trailer-ok")["Body"].read() == b"hello trailer"


def _tampered_signature(env: S3Env) -> tuple[int, str]:
    h, sig = signed(env, "GET", f"/{BUCKET}")
    h["Authorization"] = h["Authorization"].replace(
        sig, sig[:-1] + ("0" if sig[-1] != "0" else "1")
    )
    return send(env, "GET", f"/{BUCKET}", b"", h)


def _expired_presign(env: S3Env) -> tuple[int, str]:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    def then(remove_tzinfo: bool = True) -> dt.datetime:
        return past.replace(tzinfo=None) if remove_tzinfo else past

    # botocore signs in Python, or through awscrt when it is installed (as here): both clocks
    with (
        patch("botocore.auth.get_current_datetime", then),
        patch("botocore.crt.auth.get_current_datetime", then),
    ):
        url = env.client().generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": "x"}, ExpiresIn=60
        )
    u = urlsplit(url)
    return send(env, "GET", f"{u.path}?{u.query}", b"", {})


def _forged_presign(env: S3Env) -> tuple[int, str]:
    url = env.client().generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "x"}, ExpiresIn=60
    )
    u = urlsplit(url)
    return send(env, "GET", f"/{BUCKET}/other-key?{u.query}", b"", {})


BODY = b"some object body"
TWO_BLOCKS = bytes(range(256)) * 4200  # 1 MiB and a bit: the streamed path
SKEWED = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)

CASES: list[tuple[str, Callable[[S3Env], tuple[int, str]], int, str]] = [
    # (case, request, status, S3 code)
    ("tampered signature", _tampered_signature, 403, "SignatureDoesNotMatch"),
    (
        "wrong secret",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, secret="wrong"),
        403,
        "SignatureDoesNotMatch",
    ),
    (
        "unknown key",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, key_id="NOSUCHKEY"),
        403,
        "InvalidAccessKeyId",
    ),
    ("anonymous", lambda e: send(e, "GET", f"/{BUCKET}", b"", {}), 403, "AccessDenied"),
    (
        "signature v2",
        lambda e: send(e, "GET", f"/{BUCKET}", b"", {"Authorization": "AWS a:b"}),
        400,
        "InvalidRequest",
    ),
    # x-amz-date 20 min ago > the 15 min allowed
    (
        "skewed clock",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, when=SKEWED),
        403,
        "RequestTimeTooSkewed",
    ),
    # signed an hour ago, valid 60 s
    ("expired presigned URL", _expired_presign, 403, "AccessDenied"),
    ("presigned URL for another key", _forged_presign, 403, "SignatureDoesNotMatch"),
    # the second chunk's first byte flipped after signing
    (
        "corrupt chunk",
        lambda e: chunked_body(e, f"/{BUCKET}/k1", [b"x" * 100, b"y" * 100], corrupt=1),
        403,
        "SignatureDoesNotMatch",
    ),
    # final "0;chunk-signature=...\r\n\r\n" partly missing
    (
        "truncated chunked body",
        lambda e: chunked_body(e, f"/{BUCKET}/k1", [b"x" * 100], cut=90),
        400,
        "IncompleteBody",
    ),
    (
        "garbage chunk size",
        lambda e: send(
            e,
            "PUT",
            f"/{BUCKET}/k1",
            b"zz\r\n",
            signed(
                e,
                "PUT",
                f"/{BUCKET}/k1",
                b"",
                {"x-amz-decoded-content-length": "2"},
                payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            )[0],
        ),
        400,
        "InvalidRequest",
    ),
    (
        "wrong crc32 header",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"x-amz-checksum-crc32": crc32(b"other")}),
        400,
        "BadDigest",
    ),
    (
        "wrong crc32 trailer",
        lambda e: trailer_body(e, f"/{BUCKET}/k1", BODY, crc32(b"other")),
        400,
        "BadDigest",
    ),
    (
        "wrong content sha256",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, payload=hashlib.sha256(b"other").hexdigest()),
        400,
        "XAmzContentSHA256Mismatch",
    ),
    (
        "wrong Content-MD5",
        lambda e: put(
            e,
            f"/{BUCKET}/k1",
            BODY,
            {"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()},
        ),
        400,
        "BadDigest",
    ),
    (
        "wrong Content-MD5, a body of two blocks",
        lambda e: put(
            e,
            f"/{BUCKET}/k1",
            TWO_BLOCKS,
            {"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()},
        ),
        400,
        "BadDigest",
    ),
    (
        "wrong Content-MD5, a body of one block",
        lambda e: put(
            e,
            f"/{BUCKET}/k1",
            TWO_BLOCKS[:50_000],
            {"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()},
        ),
        400,
        "BadDigest",
    ),
    (
        "Content-MD5 not base64",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"Content-MD5": "not base64!"}),
        400,
        "InvalidDigest",
    ),
    (
        "Content-MD5 of 15 bytes",
        lambda e: put(
            e, f"/{BUCKET}/k1", BODY, {"Content-MD5": base64.b64encode(bytes(15)).decode()}
        ),
        400,
        "InvalidDigest",
    ),
    (
        "wrong crc32c",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"x-amz-checksum-crc32c": "AAAAAA=="}),
        400,
        "BadDigest",
    ),
    (
        "wrong crc64nvme",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="}),
        400,
        "BadDigest",
    ),
    (
        "unknown checksum algorithm",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"x-amz-checksum-crc99": "AAAAAA=="}),
        400,
        "InvalidRequest",
    ),
    (
        "part number 0",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=0&uploadId=u", BODY),
        400,
        "InvalidArgument",
    ),
    (
        "part number 10001",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=10001&uploadId=u", BODY),
        400,
        "InvalidArgument",
    ),
    (
        "part number -1",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=-1&uploadId=u", BODY),
        400,
        "InvalidArgument",
    ),
    (
        "part number huge",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=99999999999999999999&uploadId=u", BODY),
        400,
        "InvalidArgument",
    ),
    (
        "part number text",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=abc&uploadId=u", BODY),
        400,
        "InvalidArgument",
    ),
    (
        "part of unknown upload",
        lambda e: put(e, f"/{BUCKET}/k1?partNumber=1&uploadId=nope", BODY),
        404,
        "NoSuchUpload",
    ),
    ("bucket 2 chars", lambda e: put(e, "/ab", b""), 400, "InvalidBucketName"),
    ("bucket uppercase", lambda e: put(e, "/UpperCase", b""), 400, "InvalidBucketName"),
    ("bucket underscore", lambda e: put(e, "/bad_name", b""), 400, "InvalidBucketName"),
    ("bucket double dot", lambda e: put(e, "/a..b", b""), 400, "InvalidBucketName"),
    ("bucket IP address", lambda e: put(e, "/192.168.1.1", b""), 400, "InvalidBucketName"),
    ("bucket leading dash", lambda e: put(e, "/-abc", b""), 400, "InvalidBucketName"),
    ("bucket 64 chars", lambda e: put(e, "/" + "a" * 64, b""), 400, "InvalidBucketName"),
    # 1,000-level key: "a/" * 1000 is 2000 bytes > 1024
    ("1000-level key", lambda e: put(e, f"/{BUCKET}/" + "a/" * 1000, BODY), 400, "KeyTooLongError"),
    ("acl sub-resource", lambda e: get(e, f"/{BUCKET}/k1?acl"), 501, "NotImplemented"),
    ("versionId", lambda e: get(e, f"/{BUCKET}/k1?versionId=3"), 501, "NotImplemented"),
    ("bucket policy", lambda e: get(e, f"/{BUCKET}?policy"), 501, "NotImplemented"),
    (
        "server-side encryption",
        lambda e: put(e, f"/{BUCKET}/k1", BODY, {"x-amz-server-side-encryption": "AES256"}),
        501,
        "NotImplemented",
    ),
    (
        "max-keys negative",
        lambda e: get(e, f"/{BUCKET}?list-type=2&max-keys=-1"),
        400,
        "InvalidArgument",
    ),
    (
        "max-keys text",
        lambda e: get(e, f"/{BUCKET}?list-type=2&max-keys=many"),
        400,
        "InvalidArgument",
    ),
    (
        "bad continuation token",
        lambda e: get(e, f"/{BUCKET}?list-type=2&continuation-token=%25%25"),
        400,
        "InvalidArgument",
    ),
    (
        "malformed complete XML",
        lambda e: send(
            e,
            "POST",
            f"/{BUCKET}/k1?uploadId=u",
            b"<nope",
            signed(e, "POST", f"/{BUCKET}/k1?uploadId=u", b"<nope")[0],
        ),
        400,
        "MalformedXML",
    ),
]


@pytest.mark.parametrize(("case", "request_", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_s3_error(
    env: S3Env, case: str, request_: Callable[[S3Env], tuple[int, str]], status: int, code: str
) -> None:
    assert request_(env) == (status, code)


def test_nothing_was_stored_by_bad_requests(env: S3Env) -> None:
    s3 = env.client()
    keys = [c["Key"] for c in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert "k1" not in keys
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert not {"ab", "bad_name", "a..b"} & set(names)


def test_content_md5_is_checked_once_for_objects_and_parts(env: S3Env) -> None:
    """The engine's MD5 (the ETag) checks a declared Content-MD5: a matching one is
    accepted for a PUT and a part, a wrong one on a part is BadDigest and stores no part."""
    s3 = env.client()
    for data in (BODY, TWO_BLOCKS):
        md5 = hashlib.md5(data)
        r = s3.put_object(
            Bucket=BUCKET,
            Key="md5ok",
            Body=data,
            ContentMD5=base64.b64encode(md5.digest()).decode(),
        )
        assert r["ETag"] == f'"{md5.hexdigest()}"'
        assert s3.get_object(Bucket=BUCKET, Key="md5ok")["Body"].read() == data
    up = s3.create_multipart_upload(Bucket=BUCKET, Key="md5part")["UploadId"]
    path = f"/{BUCKET}/md5part?partNumber=1&uploadId={up}"
    wrong = {"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()}
    assert put(env, path, TWO_BLOCKS, wrong) == (400, "BadDigest")
    assert s3.list_parts(Bucket=BUCKET, Key="md5part", UploadId=up).get("Parts", []) == []
    right = {"Content-MD5": base64.b64encode(hashlib.md5(TWO_BLOCKS).digest()).decode()}
    assert put(env, path, TWO_BLOCKS, right) == (200, "")
    (part,) = s3.list_parts(Bucket=BUCKET, Key="md5part", UploadId=up)["Parts"]
    assert part["ETag"] == f'"{hashlib.md5(TWO_BLOCKS).hexdigest()}"'
    s3.abort_multipart_upload(Bucket=BUCKET, Key="md5part", UploadId=up)


def test_a_500_level_key_round_trips(env: S3Env) -> None:
    key = "a/" * 500  # 1000 bytes, within the 1024-byte limit
    s3 = env.client()
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"deep")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"deep"
    r = s3.list_objects_v2(Bucket=BUCKET, Prefix="a/a/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/a/a/"]
