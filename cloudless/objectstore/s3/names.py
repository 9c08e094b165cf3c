"""Bucket and key name rules (S3's general-purpose bucket rules)."""

from __future__ import annotations

import functools
import ipaddress
import re

from cloudless.objectstore.s3.errors import S3Error

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


def check_bucket(name: str) -> None:
    """Raise ``InvalidBucketName`` saying which rule ``name`` breaks."""
    why = _bucket_rule_broken(name)
    if why:
        raise S3Error("InvalidBucketName", f"bucket name {name!r} {why}", resource=name)


@functools.lru_cache(maxsize=1024)
def _bucket_rule_broken(name: str) -> str | None:
    """Why ``name`` is not a bucket name, or None (cached: every request checks its
    bucket's)."""
    why = None
    if not 3 <= len(name) <= 63:
        why = f"is {len(name)} characters; bucket names have 3 to 63"
    elif not _BUCKET.match(name):
        why = (
            "may hold only lowercase letters, digits, '.' and '-', and must start and end "
            "with a letter or digit"
        )
    elif ".." in name or ".-" in name or "-." in name:
        why = "must not contain '..', '.-' or '-.'"
    elif name.startswith("xn--") or name.startswith("sthree-") or name.endswith("-s3alias"):
        why = "uses a reserved prefix or suffix (xn--, sthree-, -s3alias)"
    else:
        try:
            ipaddress.IPv4Address(name)
            why = "must not look like an IP address"
        except ValueError:
            pass
    return why


def check_key(key: str) -> None:
    if not key:
        raise S3Error("InvalidArgument", "object key is empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise S3Error(
            "KeyTooLongError",
            f"object key is {len(key.encode())} bytes; at most {MAX_KEY_BYTES}",
        )
