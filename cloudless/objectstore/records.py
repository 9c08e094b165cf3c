"""The metadata records the engine keeps in its LWW tables, their keys and partitions.

| table | pk | partition of | value |
|---|---|---|---|
| ``objects`` | ``<bucket>/<key>`` | bucket | ``ObjectMeta`` (tombstone = deleted) |
| ``version_blocks`` | ``<version>/<part:05>/<offset:015>`` | version | ``BlockRef`` |
| ``uploads`` | ``<bucket>/<key>/<upload id>`` | bucket | ``Upload`` (tombstone = done) |
| ``parts`` | ``<upload id>/<part:05>/<timestamp:015>`` | upload id | ``Part`` |
| ``block_refs`` | ``<hash>/<version>`` | hash | ``b"1"`` (see ``blocks.py``) |
| ``putting`` | ``<version>`` | bucket | ``Putting`` (tombstone = settled) |

A version's block list is one row per block (a single PUT of one block has none: its
``ObjectMeta.blocks`` is its list), so a huge upload is many small rows, written and
read in order. Parts are keyed by part number *and* timestamp, so a retried part never
overwrites the first attempt: completion picks the attempt whose ETag the client names.

An object of up to ``blocks.INLINE_MAX`` bytes has no blocks: its record carries its body,
raw, after the JSON head (``BODY``). Decoding checks the body against the ETag; a listing
reads heads only (``listed``, ``ObjectMeta.head``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import blake3

from cloudless.objectstore.layout import partition_of

EMBED_MAX = 8
"""Objects of up to this many blocks carry their block list in the object row."""
OBJECTS = "objects"
VERSION_BLOCKS = "version_blocks"
UPLOADS = "uploads"
PARTS = "parts"
PUTTING = "putting"


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
        if self.blocks is not None:
            d["b"] = [[b.hash, b.size] for b in self.blocks]
        head = json.dumps(d, separators=(",", ":")).encode()
        if self.inline is None:
            return head
        raw = head + BODY + self.inline
        if body_matches(self):
            BODIES.keep(raw, self)
        return raw

    @classmethod
    def decode(cls, raw: bytes) -> ObjectMeta:
        """The record ``encode`` gave ``raw``, its inline body checked against its ETag
        (``CorruptRecord`` if it does not match). Decoded records are cached, keyed by their
        bytes, and shared (nobody may change their dictionaries): heads in ``_decode_object``,
        records with a body in ``BODIES``, which holds only records whose body matched."""
        cut = raw.find(BODY)
        if cut < 0:
            return _decode_object(raw)
        held = BODIES.get(raw)
        if held is not None:
            return held
        obj = _with_body(raw, cut)
        check_body(obj)
        BODIES.keep(raw, obj)
        return obj

    @classmethod
    def head(cls, raw: bytes) -> ObjectMeta:
        """``decode`` without the inline body (``inline`` None, nothing checked): for a
        listing, or for what a superseded version held (its version and blocks)."""
        return _decode_object(listed(raw))


class CorruptRecord(ValueError):
    """An object record whose inline body does not match its ETag (damaged where it is
    stored)."""


def body_matches(obj: ObjectMeta) -> bool:
    """Whether ``obj``'s inline body matches its ETag: the MD5 of the bytes of a single PUT
    and of its copies (a multipart ETag ends in ``-N``; such objects are never inline, and an
    ETag that is not an MD5 is not checked)."""
    body = obj.inline
    return body is None or len(obj.etag) != 32 or hashlib.md5(body).hexdigest() == obj.etag


def check_body(obj: ObjectMeta) -> None:
    """``CorruptRecord`` unless ``body_matches(obj)``."""
    if not body_matches(obj):
        raise CorruptRecord(
            f"object version {obj.version}: its inline body does not match its ETag"
        )


def intact(raw: bytes) -> bool:
    """Whether a stored row value is whole as far as it can tell: a record with a body must
    have a head that reads and a body that matches its ETag; any other value (a head, a
    tombstone's absence of one, another table's row) has nothing to check and is intact.
    Used to break a tie between two states of one write (``crdt.merge``): a copy damaged
    where it was stored never outranks the good one."""
    cut = raw.find(BODY)
    if cut < 0 or BODIES.get(raw) is not None:
        return True
    try:
        obj = _with_body(raw, cut)
    except (ValueError, KeyError, TypeError):
        return False
    return body_matches(obj)


def _with_body(raw: bytes, cut: int) -> ObjectMeta:
    """The record in ``raw`` whose body follows ``BODY`` at ``cut``, unchecked."""
    return replace(_decode_object(raw[:cut]), inline=raw[cut + 1 :])


class _Bodies:
    """Decoded records with inline bodies, each checked (``body_matches``) before it is kept,
    keyed by the record's bytes, up to ``budget`` bytes of bodies (least recently used
    dropped). Keyed by content, so a record whose stored bytes changed is a new key, decoded
    and checked again; a record encoded here is kept at once, so a GET after its PUT reads it
    from memory, as a small block is held once written."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._held: OrderedDict[bytes, ObjectMeta] = OrderedDict()
        self._bytes = 0

    def get(self, raw: bytes) -> ObjectMeta | None:
        obj = self._held.pop(raw, None)
        if obj is not None:
            self._held[raw] = obj  # most recently used now
        return obj

    def keep(self, raw: bytes, obj: ObjectMeta) -> None:
        """Hold ``obj``, decoded from ``raw``; the caller checked its body."""
        cost = _cost(raw, obj)
        if cost > self.budget or raw in self._held:
            return
        self._held[raw] = obj
        self._bytes += cost
        while self._bytes > self.budget:
            old, gone = self._held.popitem(last=False)
            self._bytes -= _cost(old, gone)


def _cost(raw: bytes, obj: ObjectMeta) -> int:
    return len(raw) + len(obj.inline or b"") + _BODY_OVERHEAD


BODY_CACHE_BYTES = 8 << 20
"""What ``BODIES`` may hold: each record's bytes and its body's (a copy, or the body the
record was encoded from) plus ``_BODY_OVERHEAD``. Process-wide, like the decoded heads (the
record's bytes are often the same object the node's row cache holds)."""
_BODY_OVERHEAD = 300
BODIES = _Bodies(BODY_CACHE_BYTES)
BODY = b"\0"
"""Separates an object record's JSON head from its inline body (the raw bytes follow it).
JSON as ``json.dumps`` writes it never holds a NUL byte, so the first one is the separator.
Records written before bodies followed the head carry them base64-encoded in the head's
``"i"``, which ``decode`` still reads."""
DECODED_MAX = 2048
"""Decoded object records kept (heads only: each at most a few KiB)."""


def listed(raw: bytes) -> bytes:
    """An object record without its inline body, for a listing (which needs the head only:
    size, ETag, time). ``decode`` of it gives ``inline=None``: never serve an object from it."""
    cut = raw.find(BODY)
    if cut >= 0:
        return raw[:cut]
    if b'"i":' not in raw:
        return raw
    d = json.loads(raw)
    d.pop("i", None)
    return json.dumps(d, separators=(",", ":")).encode()


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


@dataclass(frozen=True)
class Putting:
    """A version with blocks being written (a single PUT, a copy, a part of a multipart
    upload, a completion): written with its blocks (or before a copy or a completion links
    its rows), so a writer that dies before its commit leaves a trace of what it referenced
    (``Engine.settle_putting``). ``blocks``: the hashes of a one-block PUT (its only list,
    which the object row would have carried); None: the version's ``version_blocks`` rows
    list them. ``upload``: the multipart upload a part attempt belongs to (committed once
    a part row names it)."""

    bucket: str
    key: str
    started: float
    blocks: tuple[str, ...] | None = None
    upload: str | None = None

    def encode(self) -> bytes:
        d: dict[str, Any] = {"b": self.bucket, "k": self.key, "t": self.started}
        if self.blocks is not None:
            d["h"] = list(self.blocks)
        if self.upload is not None:
            d["u"] = self.upload
        return json.dumps(d).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Putting:
        d = json.loads(raw)
        h, u = d.get("h"), d.get("u")
        blocks = None if h is None else tuple(str(x) for x in h)
        return cls(str(d["b"]), str(d["k"]), float(d["t"]), blocks, None if u is None else str(u))
