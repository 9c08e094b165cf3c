"""``aws-chunked`` request bodies: signed chunks (each chained to the previous signature),
unsigned chunks with trailers, and signed chunks with a signed trailer.

``decode`` yields the payload bytes; trailing headers (e.g. ``x-amz-checksum-crc32``) land in
the ``trailers`` dict once the body is fully read. Any framing error, bad chunk signature or
missing final chunk raises an ``S3Error`` (``IncompleteBody``, ``SignatureDoesNotMatch``,
``InvalidRequest``) before the caller commits anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Protocol

from cloudless.objectstore.s3 import sigv4
from cloudless.objectstore.s3.errors import S3Error

MAX_LINE = 4096
MAX_CHUNK = 16 << 20


class Reader(Protocol):
    async def readuntil(self, separator: bytes = ...) -> bytes: ...

    async def readexactly(self, n: int) -> bytes: ...


async def _line(reader: Reader) -> bytes:
    try:
        line = await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, EOFError):
        raise S3Error("IncompleteBody", "aws-chunked body ended before its final chunk") from None
    except (asyncio.LimitOverrunError, ValueError):
        raise S3Error("InvalidRequest", "aws-chunked body: chunk header line too long") from None
    if len(line) > MAX_LINE:
        raise S3Error("InvalidRequest", "aws-chunked body: chunk header line too long")
    return line[:-2]


async def _exactly(reader: Reader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, EOFError):
        raise S3Error("IncompleteBody", "aws-chunked body ended inside a chunk") from None


def _bad(what: str) -> S3Error:
    return S3Error("InvalidRequest", f"aws-chunked body: {what}")


async def decode(
    reader: Reader, verified: sigv4.Verified, trailers: dict[str, str]
) -> AsyncIterator[bytes]:
    signed = verified.payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
    has_trailer = verified.payload in (
        sigv4.STREAMING_SIGNED_TRAILER,
        sigv4.STREAMING_UNSIGNED_TRAILER,
    )
    previous = verified.signature
    while True:
        header = (await _line(reader)).decode("latin-1")
        size_hex, _, ext = header.partition(";")
        try:
            size = int(size_hex, 16)
        except ValueError:
            raise _bad(f"chunk size {size_hex[:20]!r} is not hexadecimal") from None
        if size < 0 or size > MAX_CHUNK:
            raise _bad(f"chunk of {size} bytes; at most {MAX_CHUNK}")
        data = await _exactly(reader, size) if size else b""
        if signed:
            if not ext.startswith("chunk-signature="):
                raise S3Error("SignatureDoesNotMatch", "aws-chunked chunk has no chunk-signature")
            want = sigv4.chunk_signature(verified, previous, hashlib.sha256(data).hexdigest())
            got = ext[len("chunk-signature=") :]
            if not hmac.compare_digest(want, got):
                raise S3Error("SignatureDoesNotMatch", "aws-chunked chunk signature does not match")
            previous = got
        if size == 0:
            break
        if await _exactly(reader, 2) != b"\r\n":
            raise _bad("chunk data not followed by CRLF")
        yield data
    if not has_trailer:
        if not signed:
            return
        # A signed body without trailer ends "0;chunk-signature=...\r\n\r\n".
        if await _exactly(reader, 2) != b"\r\n":
            raise _bad("final chunk not followed by CRLF")
        return
    raw = b""
    while True:
        line = await _line(reader)
        if not line:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise _bad(f"trailer line {line[:40]!r} has no ':'")
        name = name.strip().lower()
        if name == "x-amz-trailer-signature":
            if not signed:
                raise _bad("trailer signature on an unsigned body")
            want = sigv4.trailer_signature(verified, previous, raw)
            if not hmac.compare_digest(want, value.strip()):
                raise S3Error(
                    "SignatureDoesNotMatch", "aws-chunked trailer signature does not match"
                )
            trailers["x-amz-trailer-signature"] = value.strip()
            continue
        trailers[name] = value.strip()
        raw += f"{name}:{value.strip()}\n".encode()
    if signed and "x-amz-trailer-signature" not in trailers:
        raise S3Error(
            "SignatureDoesNotMatch", "signed aws-chunked body lacks its trailer signature"
        )
