"""aws-cli (Debian's ``awscli``, v2) against one node on loopback: what a user types first.
``aws s3`` uploads a small file in one PUT and a 20 MiB one as a multipart upload (8 MiB
parts), lists, downloads and removes; ``aws s3api`` heads an object and reads a range, and
sets, reads and removes a bucket's lifecycle rules. Each download is compared byte for
byte."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.objectstore.conftest import REGION, S3Env

AWS = shutil.which("aws", path="/usr/bin:/usr/local/bin") or ""
pytestmark = pytest.mark.skipif(
    not AWS, reason="aws-cli not installed (scripts/install-system-deps installs awscli)"
)


def aws(env: S3Env, home: Path, *args: str) -> str:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no user config or credentials file is read
        "AWS_ACCESS_KEY_ID": env.key.key_id,
        "AWS_SECRET_ACCESS_KEY": env.key.secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PAGER": "",
    }
    r = subprocess.run(
        [AWS, "--endpoint-url", env.node.endpoint, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"aws {' '.join(args)}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def test_awscli_round_trips(s3env: S3Env, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello from aws-cli\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 << 20))  # over aws-cli's 8 MiB multipart threshold
    aws(s3env, tmp_path, "s3", "mb", "s3://awscli")
    aws(s3env, tmp_path, "s3", "cp", str(small), "s3://awscli/docs/small.txt")
    aws(s3env, tmp_path, "s3", "cp", str(big), "s3://awscli/big.bin")

    listing = aws(s3env, tmp_path, "s3", "ls", "--recursive", "s3://awscli")
    assert "docs/small.txt" in listing and "big.bin" in listing
    assert str(20 << 20) in listing

    head = json.loads(aws(s3env, tmp_path, "s3api", "head-object", "--bucket", "awscli",
                          "--key", "big.bin"))  # fmt: skip
    assert head["ContentLength"] == 20 << 20
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 8 + 8 + 4 MiB

    for key, want in (("docs/small.txt", small), ("big.bin", big)):
        got = tmp_path / ("got-" + want.name)
        aws(s3env, tmp_path, "s3", "cp", f"s3://awscli/{key}", str(got))
        assert got.read_bytes() == want.read_bytes(), key

    part = tmp_path / "range.bin"
    aws(s3env, tmp_path, "s3api", "get-object", "--bucket", "awscli", "--key", "big.bin",
        "--range", "bytes=1000-1999", str(part))  # fmt: skip
    assert part.read_bytes() == big.read_bytes()[1000:2000]

    aws(s3env, tmp_path, "s3", "rm", "--recursive", "s3://awscli")
    assert aws(s3env, tmp_path, "s3", "ls", "s3://awscli").strip() == ""
    aws(s3env, tmp_path, "s3", "rb", "s3://awscli")


def test_awscli_bucket_lifecycle(s3env: S3Env, tmp_path: Path) -> None:
    """``aws s3api put-bucket-lifecycle-configuration`` (a JSON file, as the AWS docs show),
    read back with ``get-``, removed with ``delete-bucket-lifecycle``."""
    aws(s3env, tmp_path, "s3", "mb", "s3://awscli-lc")
    rules = {
        "Rules": [
            {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
             "Expiration": {"Days": 7},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        ]
    }  # fmt: skip
    f = tmp_path / "lifecycle.json"
    f.write_text(json.dumps(rules))
    aws(s3env, tmp_path, "s3api", "put-bucket-lifecycle-configuration", "--bucket", "awscli-lc",
        "--lifecycle-configuration", f"file://{f}")  # fmt: skip
    got = json.loads(aws(s3env, tmp_path, "s3api", "get-bucket-lifecycle-configuration",
                         "--bucket", "awscli-lc"))  # fmt: skip
    assert got["Rules"] == [
        {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled",
         "Expiration": {"Days": 7},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]  # fmt: skip
    aws(s3env, tmp_path, "s3api", "delete-bucket-lifecycle", "--bucket", "awscli-lc")
