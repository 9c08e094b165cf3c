"""Public-read buckets (S3's canned ACL ``public-read``): anyone may list such a bucket and read
its objects, signed or not; nothing else is open to an unsigned request, and a private or
missing bucket answers it the same ``AccessDenied``. The owner opens and closes it
(PutBucketAcl, or CreateBucket with the ACL)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from tests.integration.objectstore.conftest import S3Env

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def anonymous(env: S3Env, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(env.node.endpoint + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def buckets(s3env: S3Env) -> S3Env:
    s3 = s3env.client()
    s3.create_bucket(Bucket="pub")
    s3.put_bucket_acl(Bucket="pub", ACL="public-read")
    s3.create_bucket(Bucket="priv")
    for b in ("pub", "priv"):
        s3.put_object(Bucket=b, Key="k", Body=b"hello " + b.encode())
    return s3env


CASES = [
    # (method, path, body, status, what the answer holds)
    ("GET", "/pub/k", None, 200, b"hello pub"),
    ("HEAD", "/pub/k", None, 200, b""),
    ("GET", "/pub?list-type=2", None, 200, b"<Key>k</Key>"),
    ("GET", "/pub", None, 200, b"<Key>k</Key>"),
    ("HEAD", "/pub", None, 200, b""),
    ("GET", "/pub/nope", None, 404, b"NoSuchKey"),
    ("PUT", "/pub/k2", b"x", 403, b"may only read"),
    ("DELETE", "/pub/k", None, 403, b"AccessDenied"),
    ("POST", "/pub?delete", b"<Delete/>", 403, b"AccessDenied"),
    ("GET", "/pub?uploads", None, 403, b"public-read"),
    ("GET", "/pub?lifecycle", None, 403, b"AccessDenied"),
    ("GET", "/pub?acl", None, 403, b"AccessDenied"),
    ("GET", "/", None, 403, b"cannot list buckets"),
    ("GET", "/priv/k", None, 403, b"public-read"),
    ("GET", "/priv?list-type=2", None, 403, b"AccessDenied"),
    ("GET", "/no-such-bucket/k", None, 403, b"public-read"),  # as a private one
]


@pytest.mark.parametrize(("method", "path", "body", "status", "holds"), CASES)
def test_unsigned_requests(
    buckets: S3Env, method: str, path: str, body: bytes | None, status: int, holds: bytes
) -> None:
    got_status, got = anonymous(buckets, method, path, body)
    assert got_status == status and holds in got, got[:300]


def test_the_owner_opens_and_closes_it(buckets: S3Env) -> None:
    s3 = buckets.client()
    grants = s3.get_bucket_acl(Bucket="pub")["Grants"]
    assert {"Type": "Group", "URI": ALL_USERS} in [g["Grantee"] for g in grants]
    assert all(
        g["Grantee"].get("URI") != ALL_USERS for g in s3.get_bucket_acl(Bucket="priv")["Grants"]
    )
    bob = buckets.client(buckets.other)  # signed, but no grant on either bucket
    assert bob.get_object(Bucket="pub", Key="k")["Body"].read() == b"hello pub"
    for call in (
        lambda: bob.put_object(Bucket="pub", Key="k", Body=b"mine"),
        lambda: bob.get_object(Bucket="priv", Key="k"),
        lambda: bob.put_bucket_acl(Bucket="pub", ACL="private"),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as e:
        s3.put_bucket_acl(Bucket="pub", ACL="public-read-write")
    assert e.value.response["Error"]["Code"] == "NotImplemented"
    s3.create_bucket(Bucket="pub-at-birth", ACL="public-read")
    s3.put_object(Bucket="pub-at-birth", Key="k", Body=b"born public")
    assert anonymous(buckets, "GET", "/pub-at-birth/k") == (200, b"born public")
    s3.put_bucket_acl(Bucket="pub-at-birth", ACL="private")
    status, _ = anonymous(buckets, "GET", "/pub-at-birth/k")
    assert status == 403  # closed again (the node's bucket cache is cleared on change)
