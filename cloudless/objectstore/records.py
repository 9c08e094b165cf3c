"""The metadata records the engine keeps in its LWW tables, their keys and partitions.

| table | pk | partition of | value |
|---|---|---|---|
| ``objects`` | ``<bucket>/<key>`` | bucket | ``ObjectMeta`` (tombstone = deleted) |
| ``version_blocks`` | ``<version>/<part:05>/<offset:015>`` | version | ``BlockRef`` |
| ``uploads`` | ``<bucket>/<key>/<upload id>`` | bucket | ``Upload`` (tombstone = done) |
| ``parts`` | ``<upload id>/<part:05>/<timestamp:015>`` | upload id | ``Part`` |
| ``block_refs`` | ``<hash>/<version>`` | hash | ``b"1"`` (see ``blocks.py``) |

A version's block list is one row per block (a single PUT of one block has none: its
``ObjectMeta.blocks`` is its list), so a huge upload is many small rows, written and
read in order. Parts are keyed by part number *and* timestamp, so a retried part never
overwrites the first attempt: completion picks the attempt whose ETag the client names.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from typing import Any

import blake3

from cloudless.objectstore.layout import partition_of

EMBED_MAX = 8
"""Objects of up to this many blocks carry their block list in the object row."""
OBJECTS = "objects"
VERSION_BLOCKS = "version_blocks"
UPLOADS = "uploads"
PARTS = "parts"


@functools.lru_cache(maxsize=1024)
def partition(of: str) -> int:
    """The partition of a bucket, version, upload id or block hash (cached: a bucket's is
    asked on every request)."""
    return partition_of(blake3.blake3(of.encode()).digest())


def object_pk(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def block_pk(version: str, part: int, offset: int) -> str:
    return f"{version}/{part:05d}/{offset:015d}"


def part_pk(upload: str, part: int, timestamp: int) -> str:
    return f"{upload}/{part:05d}/{timestamp:015d}"


@dataclass(frozen=True)
class ObjectMeta:
    version: str
    size: int
    etag: str
    mtime: float
    content_type: str = "binary/octet-stream"
    user_meta: dict[str, str] = field(default_factory=dict)
    inline: bytes | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    parts: int = 0
    """How many multipart parts made the object (0: a single PUT)."""
    blocks: tuple[BlockRef, ...] | None = None
    """The block list of a small object (at most ``EMBED_MAX``: a copy of its
    ``version_blocks`` rows, or, for a single PUT of one block, its only list), so a read
    needs no second lookup; None: read ``version_blocks``."""

    def encode(self) -> bytes:
        d: dict[str, Any] = {
            "v": self.version,
            "n": self.size,
            "e": self.etag,
            "t": self.mtime,
            "ct": self.content_type,
            "m": self.user_meta,
            "c": self.checksums,
            "p": self.parts,
        }
        if self.inline is not None:
            d["i"] = base64.b64encode(self.inline).decode()
        if self.blocks is not None:
            d["b"] = [[b.hash, b.size] for b in self.blocks]
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ObjectMeta:
        """The record ``encode`` gave ``raw`` (cached: the same row is read again and again,
        so the result is shared; nobody may change its dictionaries)."""
        return _decode_object(raw)


DECODED_MAX = 2048
"""Decoded object records kept (each at most a few KiB: an inline body is <= 3 KiB)."""


@functools.lru_cache(maxsize=DECODED_MAX)
def _decode_object(raw: bytes) -> ObjectMeta:
    d = json.loads(raw)
    return ObjectMeta(
        version=d["v"],
        size=d["n"],
        etag=d["e"],
        mtime=d["t"],
        content_type=d["ct"],
        user_meta=d["m"],
        inline=base64.b64decode(d["i"]) if "i" in d else None,
        checksums=d.get("c", {}),
        parts=d.get("p", 0),
        blocks=tuple(BlockRef(h, n) for h, n in d["b"]) if "b" in d else None,
    )


@dataclass(frozen=True)
class BlockRef:
    hash: str
    size: int

    def encode(self) -> bytes:
        return json.dumps([self.hash, self.size]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> BlockRef:
        h, n = json.loads(raw)
        return cls(h, n)


@dataclass(frozen=True)
class Upload:
    upload_id: str
    created: float
    content_type: str
    user_meta: dict[str, str]

    def encode(self) -> bytes:
        return json.dumps(
            {"u": self.upload_id, "t": self.created, "ct": self.content_type, "m": self.user_meta}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Upload:
        d = json.loads(raw)
        return cls(d["u"], d["t"], d["ct"], d["m"])


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int
    version: str
    mtime: float

    def encode(self) -> bytes:
        return json.dumps([self.number, self.etag, self.size, self.version, self.mtime]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Part:
        n, e, s, v, t = json.loads(raw)
        return cls(n, e, s, v, t)
