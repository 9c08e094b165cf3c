"""boto3 against one node on loopback: buckets, objects, listings, copies, multipart."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.objectstore.conftest import S3Env


def code_of(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_bucket_lifecycle(s3: Any) -> None:
    s3.create_bucket(Bucket="life")
    s3.head_bucket(Bucket="life")
    assert "life" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket="life")["LocationConstraint"] == "cloudless"
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="life")
    assert code_of(e) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket="life", Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket="life")
    assert code_of(e) == "BucketNotEmpty"
    s3.delete_object(Bucket="life", Key="k")
    s3.delete_bucket(Bucket="life")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket="life")
    assert e.value.response["Error"]["Code"] == "404"


def test_put_get_small_and_large(s3: Any) -> None:
    s3.create_bucket(Bucket="data")
    small = b"hello, world"
    large = os.urandom(3 * (1 << 20) + 12345)  # 3 full blocks + a tail
    for key, body in [("small.txt", small), ("dir/large.bin", large)]:
        put = s3.put_object(
            Bucket="data", Key=key, Body=body, ContentType="text/plain", Metadata={"who": "me"}
        )
        assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
        got = s3.get_object(Bucket="data", Key=key)
        assert got["Body"].read() == body
        assert got["ContentType"] == "text/plain" and got["Metadata"] == {"who": "me"}
        head = s3.head_object(Bucket="data", Key=key)
        assert head["ContentLength"] == len(body)
    # range across a block boundary: bytes 1048570..1048585 (16 bytes)
    r = s3.get_object(Bucket="data", Key="dir/large.bin", Range="bytes=1048570-1048585")
    assert r["Body"].read() == large[1048570:1048586]
    assert r["ContentRange"] == f"bytes 1048570-1048585/{len(large)}"
    assert (
        s3.get_object(Bucket="data", Key="small.txt", Range="bytes=-5")["Body"].read() == b"world"
    )
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="small.txt", Range="bytes=100-")
    assert code_of(e) == "InvalidRange"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="data", Key="nope")
    assert code_of(e) == "NoSuchKey"


def test_conditional_gets_and_overrides(s3: Any) -> None:
    s3.create_bucket(Bucket="cond")
    etag = s3.put_object(Bucket="cond", Key="k", Body=b"abc")["ETag"]
    assert s3.get_object(Bucket="cond", Key="k", IfMatch=etag)["Body"].read() == b"abc"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="cond", Key="k", IfMatch='"0000"')
    assert code_of(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="cond", Key="k", IfNoneMatch=etag)
    assert code_of(e) == "304"
    r = s3.get_object(
        Bucket="cond", Key="k", ResponseContentType="x/y", ResponseContentDisposition="inline"
    )
    assert r["ContentType"] == "x/y" and r["ContentDisposition"] == "inline"


def test_listing_v2_prefix_delimiter_pages_and_url_encoding(s3: Any) -> None:
    s3.create_bucket(Bucket="lst")
    keys = ["a/1", "a/2", "a/b/3", "b", "c d/x", "c d/\u00e9", "z"]  # UTF-8 byte order
    for k in keys:
        s3.put_object(Bucket="lst", Key=k, Body=k.encode())
    r = s3.list_objects_v2(Bucket="lst", Delimiter="/")
    assert [c["Key"] for c in r["Contents"]] == ["b", "z"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c d/"]
    r = s3.list_objects_v2(Bucket="lst", Prefix="a/", Delimiter="/")
    assert [c["Key"] for c in r["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/b/"]
    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket="lst", PaginationConfig={"PageSize": 2}
    ):
        assert page["KeyCount"] <= 2
        seen += [c["Key"] for c in page.get("Contents", [])]
    assert seen == keys  # byte order, every key once
    assert [c["Key"] for c in s3.list_objects_v2(Bucket="lst", StartAfter="b")["Contents"]] == keys[
        4:
    ]
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(
        Bucket="lst", PaginationConfig={"PageSize": 3}
    ):
        v1 += [c["Key"] for c in page.get("Contents", [])]
    assert v1 == keys
    assert s3.list_objects_v2(Bucket="lst", MaxKeys=0)["KeyCount"] == 0


def test_copy_with_directives_and_conditions(s3: Any) -> None:
    s3.create_bucket(Bucket="copies")
    body = os.urandom(1_500_000)
    etag = s3.put_object(Bucket="copies", Key="src", Body=body, Metadata={"a": "1"})["ETag"]
    s3.copy_object(Bucket="copies", Key="dst", CopySource={"Bucket": "copies", "Key": "src"})
    got = s3.get_object(Bucket="copies", Key="dst")
    assert got["Body"].read() == body and got["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket="copies",
        Key="dst2",
        CopySource="copies/src",
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        CopySourceIfMatch=etag,
    )
    assert s3.head_object(Bucket="copies", Key="dst2")["Metadata"] == {"b": "2"}
    with pytest.raises(ClientError) as e:
        s3.copy_object(
            Bucket="copies", Key="dst3", CopySource="copies/src", CopySourceIfNoneMatch=etag
        )
    assert code_of(e) == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket="copies", Key="src", CopySource="copies/src")
    assert code_of(e) == "InvalidRequest"
    s3.delete_object(Bucket="copies", Key="src")  # the copies share blocks and keep them
    assert s3.get_object(Bucket="copies", Key="dst2")["Body"].read() == body


def test_list_multipart_uploads_pages(s3: Any) -> None:
    """More uploads than a page holds: boto3's paginator follows NextKeyMarker and
    NextUploadIdMarker to the whole listing, in key order; a delimiter rolls keys up."""
    s3.create_bucket(Bucket="ups")
    made = []
    for key in ["b", "a", "dir/x", "a", "c/d/e", "dir/y", "z"]:
        made.append((key, s3.create_multipart_upload(Bucket="ups", Key=key)["UploadId"]))
    done = s3.create_multipart_upload(Bucket="ups", Key="a")["UploadId"]
    s3.abort_multipart_upload(Bucket="ups", Key="a", UploadId=done)  # listed no more
    pages = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket="ups", MaxUploads=2))
    assert len(pages) == 4 and all(p["IsTruncated"] for p in pages[:-1])
    got = [(u["Key"], u["UploadId"]) for p in pages for u in p.get("Uploads", [])]
    assert got == sorted(made)
    rolled = s3.list_multipart_uploads(Bucket="ups", Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["c/", "dir/"]
    assert [u["Key"] for u in rolled["Uploads"]] == ["a", "a", "b", "z"]
    under = s3.list_multipart_uploads(Bucket="ups", Prefix="dir/", KeyMarker="dir/x")
    assert [u["Key"] for u in under["Uploads"]] == ["dir/y"] and not under["IsTruncated"]


def test_multipart_with_a_retried_part(s3: Any) -> None:
    s3.create_bucket(Bucket="multi")
    part1_first = os.urandom(5 << 20)
    part1_retry = os.urandom(5 << 20)
    part2 = os.urandom(1000)
    up = s3.create_multipart_upload(Bucket="multi", Key="big", ContentType="video/x")["UploadId"]
    s3.upload_part(Bucket="multi", Key="big", UploadId=up, PartNumber=1, Body=part1_first)
    e1 = s3.upload_part(Bucket="multi", Key="big", UploadId=up, PartNumber=1, Body=part1_retry)[
        "ETag"
    ]
    e2 = s3.upload_part(Bucket="multi", Key="big", UploadId=up, PartNumber=2, Body=part2)["ETag"]
    parts = s3.list_parts(Bucket="multi", Key="big", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [
        (1, e1, 5 << 20),
        (2, e2, 1000),
    ]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="multi")["Uploads"]] == [up]
    done = s3.complete_multipart_upload(
        Bucket="multi",
        Key="big",
        UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    md5s = hashlib.md5(part1_retry).digest() + hashlib.md5(part2).digest()
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    got = s3.get_object(Bucket="multi", Key="big")
    assert got["Body"].read() == part1_retry + part2 and got["ContentType"] == "video/x"
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket="multi", Key="big", UploadId=up)
    assert code_of(e) == "NoSuchUpload"


def test_multipart_errors_and_abort(s3: Any) -> None:
    s3.create_bucket(Bucket="multi2")
    up = s3.create_multipart_upload(Bucket="multi2", Key="k")["UploadId"]
    e1 = s3.upload_part(Bucket="multi2", Key="k", UploadId=up, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket="multi2", Key="k", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    cases = [
        # (parts listed, expected code)
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": '"deadbeef"'}], "InvalidPart"),
        (
            [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}],
            "EntityTooSmall",
        ),  # 5 B < 5 MiB
    ]
    for parts, want in cases:
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(
                Bucket="multi2", Key="k", UploadId=up, MultipartUpload={"Parts": parts}
            )
        assert code_of(e) == want
    s3.abort_multipart_upload(Bucket="multi2", Key="k", UploadId=up)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket="multi2", Key="k", UploadId=up, PartNumber=3, Body=b"x")
    assert code_of(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="multi2", Key="k")
    assert e.value.response["Error"]["Code"] == "404"


def test_upload_and_download_file_through_s3transfer(s3: Any, tmp_path: Any) -> None:
    from boto3.s3.transfer import TransferConfig

    s3.create_bucket(Bucket="xfer")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(12 << 20))
    cfg = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    s3.upload_file(str(src), "xfer", "f", Config=cfg)
    dst = tmp_path / "dst.bin"
    s3.download_file("xfer", "f", str(dst), Config=cfg)
    assert dst.read_bytes() == src.read_bytes()


def test_delete_objects_and_missing_delete(s3: Any) -> None:
    s3.create_bucket(Bucket="del")
    for k in ["a", "b", "c"]:
        s3.put_object(Bucket="del", Key=k, Body=b"1")
    r = s3.delete_objects(
        Bucket="del", Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]}
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == ["a", "b", "zz"]
    assert [c["Key"] for c in s3.list_objects_v2(Bucket="del")["Contents"]] == ["c"]
    s3.delete_object(Bucket="del", Key="never-existed")  # S3 answers 204 anyway


def test_presigned_urls(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="pre")
    s3.put_object(Bucket="pre", Key="k", Body=b"presigned")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "pre", "Key": "k"}, ExpiresIn=60
    )
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"presigned"
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "pre", "Key": "up"}, ExpiresIn=60
    )
    req = urllib.request.Request(put_url, data=b"via url", method="PUT")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert s3.get_object(Bucket="pre", Key="up")["Body"].read() == b"via url"


def test_permissions_per_bucket(s3env: S3Env, s3: Any) -> None:
    s3.create_bucket(Bucket="private")
    bob = s3env.client(s3env.other)
    with pytest.raises(ClientError) as e:
        bob.put_object(Bucket="private", Key="k", Body=b"x")
    assert code_of(e) == "AccessDenied"
    s3env.node.call(s3env.node.node.iam.allow("private", s3env.other.key_id, "read"))
    s3.put_object(Bucket="private", Key="k", Body=b"x")
    assert bob.get_object(Bucket="private", Key="k")["Body"].read() == b"x"
    with pytest.raises(ClientError) as e:
        bob.delete_object(Bucket="private", Key="k")
    assert code_of(e) == "AccessDenied"
    assert "private" in [b["Name"] for b in bob.list_buckets()["Buckets"]]  # now allowed


def test_a_corrupt_block_cuts_the_response_and_is_quarantined(s3env: S3Env, s3: Any) -> None:
    from botocore.exceptions import ResponseStreamingError

    from cloudless.objectstore.blocks import block_hash

    s3.create_bucket(Bucket="rot")
    data = os.urandom(2 << 20)  # two blocks
    s3.put_object(Bucket="rot", Key="k", Body=data)
    second = block_hash(data[1 << 20 :])
    s3env.node.node.blocks.path(second).write_bytes(bytes(1 << 20))  # bit rot on disk
    with pytest.raises(ResponseStreamingError):  # never bad bytes with a 200
        s3.get_object(Bucket="rot", Key="k")["Body"].read()
    assert (s3env.node.node.blocks.root / "corrupt" / second).exists()


def test_list_object_versions_is_an_unversioned_view(s3: Any) -> None:
    s3.create_bucket(Bucket="vers")
    for k in ["a", "b/c"]:
        s3.put_object(Bucket="vers", Key=k, Body=k.encode())
    r = s3.list_object_versions(Bucket="vers")
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in r["Versions"]] == [
        ("a", "null", True),
        ("b/c", "null", True),
    ]
    r = s3.list_object_versions(Bucket="vers", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["b/"]


def test_upload_part_copy_with_a_range(s3: Any) -> None:
    s3.create_bucket(Bucket="partcopy")
    src = os.urandom(6 << 20)
    s3.put_object(Bucket="partcopy", Key="src", Body=src)
    up = s3.create_multipart_upload(Bucket="partcopy", Key="dst")["UploadId"]
    # part 1: bytes 0..(5 MiB - 1) of src; part 2: the last 1000 bytes
    p1 = s3.upload_part_copy(
        Bucket="partcopy", Key="dst", UploadId=up, PartNumber=1,
        CopySource={"Bucket": "partcopy", "Key": "src"}, CopySourceRange=f"bytes=0-{(5 << 20) - 1}",
    )["CopyPartResult"]["ETag"]  # fmt: skip
    p2 = s3.upload_part_copy(
        Bucket="partcopy", Key="dst", UploadId=up, PartNumber=2,
        CopySource="partcopy/src", CopySourceRange=f"bytes={len(src) - 1000}-{len(src) - 1}",
    )["CopyPartResult"]["ETag"]  # fmt: skip
    with pytest.raises(ClientError) as e:
        s3.upload_part_copy(
            Bucket="partcopy", Key="dst", UploadId=up, PartNumber=3,
            CopySource="partcopy/src", CopySourceRange="bytes=10-5",
        )  # fmt: skip
    assert code_of(e) == "InvalidArgument"  # last before first
    s3.complete_multipart_upload(
        Bucket="partcopy", Key="dst", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]},
    )  # fmt: skip
    assert (
        s3.get_object(Bucket="partcopy", Key="dst")["Body"].read() == src[: 5 << 20] + src[-1000:]
    )


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_every_checksum_the_sdks_send(s3: Any, algorithm: str) -> None:
    """What current AWS SDKs send by default (CRC32 in botocore, CRC64NVME in others) and
    what a user may choose: checked on the way in, stored, returned with checksum mode (which
    botocore then verifies), on a single PUT and on a multipart upload's parts."""
    if "sums" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket="sums")
    body = os.urandom(1_500_000)
    field = f"Checksum{algorithm}"
    put = s3.put_object(Bucket="sums", Key=algorithm, Body=body, ChecksumAlgorithm=algorithm)
    got = s3.get_object(Bucket="sums", Key=algorithm, ChecksumMode="ENABLED")
    assert got[field] == put[field] and got["Body"].read() == body
    up = s3.create_multipart_upload(Bucket="sums", Key=f"mp-{algorithm}",
                                    ChecksumAlgorithm=algorithm)["UploadId"]  # fmt: skip
    part = s3.upload_part(Bucket="sums", Key=f"mp-{algorithm}", UploadId=up, PartNumber=1,
                          Body=body, ChecksumAlgorithm=algorithm)  # fmt: skip
    assert part[field]
    s3.abort_multipart_upload(Bucket="sums", Key=f"mp-{algorithm}", UploadId=up)


def test_get_and_head_by_part_number(s3: Any) -> None:
    """What a multipart download by part does (the AWS SDK for Java's transfer manager):
    each part as uploaded, with the object's part count; a single PUT is its own part 1."""
    s3.create_bucket(Bucket="byparts")
    p1, p2 = os.urandom(5 << 20), os.urandom(300_000)
    up = s3.create_multipart_upload(Bucket="byparts", Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket="byparts", Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket="byparts", Key="mp", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    s3.complete_multipart_upload(
        Bucket="byparts", Key="mp", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )  # fmt: skip
    total = len(p1) + len(p2)
    for n, data, first in ((1, p1, 0), (2, p2, len(p1))):
        got = s3.get_object(Bucket="byparts", Key="mp", PartNumber=n)
        assert got["Body"].read() == data and got["PartsCount"] == 2
        assert got["ContentRange"] == f"bytes {first}-{first + len(data) - 1}/{total}"
        assert s3.head_object(Bucket="byparts", Key="mp", PartNumber=n)["ContentLength"] == len(
            data
        )
    s3.put_object(Bucket="byparts", Key="single", Body=b"one piece")
    assert s3.get_object(Bucket="byparts", Key="single", PartNumber=1)["Body"].read() == (
        b"one piece"
    )
    for key, n in (("mp", 3), ("single", 2)):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="byparts", Key=key, PartNumber=n)
        assert code_of(e) == "InvalidPartNumber"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="byparts", Key="mp", PartNumber=1, Range="bytes=0-9")
    assert code_of(e) == "InvalidRequest"
    for bad in (0, 10_001):
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket="byparts", Key="mp", PartNumber=bad)
        assert code_of(e) == "InvalidArgument"
