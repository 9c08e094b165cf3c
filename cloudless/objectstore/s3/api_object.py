"""Object requests: put, copy, get (ranges, conditions, response overrides), head, delete,
and multipart uploads (create, upload part, complete, abort, list parts)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from cloudless.lib.errors import CloudlessError
from cloudless.objectstore.engine import Engine, FileSlice
from cloudless.objectstore.records import ObjectMeta
from cloudless.objectstore.s3.errors import S3Error, not_implemented
from cloudless.objectstore.s3.names import check_bucket, check_key
from cloudless.objectstore.s3.server import SUPPORTED_CHECKSUMS
from cloudless.objectstore.s3.xmlout import children, doc, el, http_date, iso, parse, text

if TYPE_CHECKING:
    from cloudless.objectstore.s3.server import Ctx, S3Server

UNSUPPORTED_QUERY = {"acl", "tagging", "retention", "legal-hold", "torrent", "restore",
                     "select", "attributes", "versionId"}  # fmt: skip
UNSUPPORTED_HEADERS = {
    "x-amz-server-side-encryption": "server-side encryption",
    "x-amz-server-side-encryption-customer-algorithm": "SSE-C",
    "x-amz-tagging": "object tagging",
    "x-amz-object-lock-mode": "object lock",
    "x-amz-object-lock-retain-until-date": "object lock",
    "x-amz-object-lock-legal-hold": "object lock",
    "x-amz-website-redirect-location": "website redirects",
    "x-amz-copy-source-server-side-encryption-customer-algorithm": "SSE-C",
}
OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language",
                  "expires")  # fmt: skip
MAX_META = 2048
WHOLE = 64 << 10
"""GET bodies up to this size are read whole before the response starts."""
log = logging.getLogger(__name__)


def user_meta(ctx: Ctx) -> dict[str, str]:
    meta = {k: v for k, v in ctx.headers.items() if k.startswith("x-amz-meta-")}
    meta.update({k: v for k, v in ctx.headers.items() if k in STORED_HEADERS})
    if sum(len(k) + len(v) for k, v in meta.items()) > MAX_META:
        raise S3Error("InvalidArgument", f"user metadata over {MAX_META} bytes")
    return meta


def _time(value: str, header: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # S3 ignores an unparsable date condition
    if parsed is None:
        return None
    del header
    return parsed.timestamp()


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def check_conditions(obj: ObjectMeta, headers: dict[str, str], prefix: str = "if-") -> None:
    """GET/HEAD conditions (``if-*``) or copy-source ones (``x-amz-copy-source-if-*``):
    If-Match / If-Unmodified-Since fail with 412, If-None-Match / If-Modified-Since with 304
    (412 for a copy source)."""
    mtime = int(obj.mtime)
    im, inm = headers.get(prefix + "match"), headers.get(prefix + "none-match")
    ims, ius = headers.get(prefix + "modified-since"), headers.get(prefix + "unmodified-since")
    copy = prefix != "if-"
    if im is not None and not _etag_matches(im, obj.etag):
        raise S3Error("PreconditionFailed", f'{prefix}match: ETag is "{obj.etag}"')
    if im is None and ius is not None:
        t = _time(ius, prefix + "unmodified-since")
        if t is not None and mtime > t:
            raise S3Error("PreconditionFailed", f"{prefix}unmodified-since: modified after")
    not_modified = "PreconditionFailed" if copy else "NotModified"
    if inm is not None and _etag_matches(inm, obj.etag):
        raise S3Error(not_modified, f"{prefix}none-match: ETag matches")
    if inm is None and ims is not None:
        t = _time(ims, prefix + "modified-since")
        if t is not None and mtime <= t:
            raise S3Error(not_modified, f"{prefix}modified-since: not modified since")


async def _send_file(request: web.BaseRequest, resp: web.StreamResponse, piece: FileSlice) -> None:
    """Send ``piece`` after what ``resp`` sent so far: by ``sendfile`` (page cache to socket,
    no copy) where the transport allows it, else read and written."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    try:
        await asyncio.get_running_loop().sendfile(
            transport, piece.file, piece.offset, piece.count, fallback=False
        )
    except (NotImplementedError, asyncio.SendfileNotAvailableError):
        await resp.write(await asyncio.to_thread(piece.read_sync))
    except (ConnectionError, RuntimeError) as e:  # RuntimeError: "Transport is closing"
        if isinstance(e, RuntimeError) and not transport.is_closing():
            raise
        # what aiohttp's own writes raise when the client is gone
        raise ConnectionResetError(f"client went away: {e}") from e


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` as (start, end exclusive); None to send everything
    (absent, malformed or multiple ranges); ``InvalidRange`` if unsatisfiable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    lo, sep, hi = header[6:].strip().partition("-")
    if not sep:
        return None
    try:
        if lo == "":
            n = int(hi)
            if n <= 0:
                raise S3Error("InvalidRange", "suffix range of zero bytes")
            return max(0, size - n), size
        start = int(lo)
        end = size if hi == "" else min(size, int(hi) + 1)
    except ValueError:
        return None
    if start < 0 or (hi != "" and int(hi) < start):
        return None
    if start >= size:
        raise S3Error("InvalidRange", f"range starts at {start}, object has {size} bytes")
    return start, end


class ObjectApi:
    def __init__(self, server: S3Server) -> None:
        self.s = server

    @property
    def engine(self) -> Engine:
        return self.s.engine

    async def dispatch(self, ctx: Ctx) -> web.StreamResponse:
        m, q = ctx.request.method, ctx.query
        for name in q:
            if name in UNSUPPORTED_QUERY:
                raise not_implemented(f"object sub-resource ?{name}")
        if m in ("PUT", "POST"):
            for h, what in UNSUPPORTED_HEADERS.items():
                if h in ctx.headers:
                    raise not_implemented(what)
            acl = ctx.headers.get("x-amz-acl")
            if acl not in (None, "private"):
                raise not_implemented(
                    f"canned ACL {acl!r} on an object (objects take their bucket's: make the "
                    "bucket public-read)"
                )
        if m == "PUT":
            if "partNumber" in q or "uploadId" in q:
                return await self.upload_part(ctx)
            if "x-amz-copy-source" in ctx.headers:
                return await self.copy(ctx)
            return await self.put(ctx)
        if m in ("GET", "HEAD"):
            if "uploadId" in q and m == "GET":
                return await self.list_parts(ctx)
            return await self.get(ctx, head=m == "HEAD")
        if m == "DELETE":
            await self.s.bucket_for(ctx, "write")
            if "uploadId" in q:
                await self.engine.abort(ctx.bucket, ctx.key, q["uploadId"])
            else:
                await self.engine.delete(ctx.bucket, ctx.key)
            return web.Response(status=204)
        if m == "POST":
            if "uploads" in q:
                return await self.create_upload(ctx)
            if "uploadId" in q:
                return await self.complete(ctx)
            raise not_implemented("this POST on an object")
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on an object")

    # ---- single objects --------------------------------------------------------------------

    async def put(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        obj = await self.engine.put(
            ctx.bucket,
            ctx.key,
            self.s.body(ctx, md5_by_caller=True),
            content_type=ctx.headers.get("content-type", "binary/octet-stream"),
            user_meta=user_meta(ctx),
            checksums=ctx.checksums,
            content_md5=self.s.declared_md5(ctx),
        )
        headers = {"ETag": f'"{obj.etag}"'}
        headers.update({f"x-amz-checksum-{k}": v for k, v in obj.checksums.items()})
        return web.Response(headers=headers)

    def _source(self, ctx: Ctx) -> tuple[str, str]:
        raw = ctx.headers["x-amz-copy-source"]
        path, _, query = raw.partition("?")
        if query:
            raise not_implemented("copying a specific version (x-amz-copy-source ?versionId)")
        path = unquote(path).lstrip("/")
        bucket, _, key = path.partition("/")
        if not key:
            raise S3Error("InvalidArgument", f"x-amz-copy-source {raw!r}: expected bucket/key")
        check_bucket(bucket)
        check_key(key)
        return bucket, key

    async def copy(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        src_bucket, src_key, src = await self._readable_source(ctx)
        directive = ctx.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", f"x-amz-metadata-directive {directive!r}")
        if directive == "COPY":
            if (src_bucket, src_key) == (ctx.bucket, ctx.key):
                raise S3Error(
                    "InvalidRequest",
                    "this copy request is illegal because it is trying to copy an object to "
                    "itself without changing the object's metadata",
                )
            ct, meta = src.content_type, src.user_meta
        else:
            ct = ctx.headers.get("content-type", "binary/octet-stream")
            meta = user_meta(ctx)
        obj = await self.engine.copy(src, ctx.bucket, ctx.key, content_type=ct, user_meta=meta)
        body = doc(
            "CopyObjectResult", el("LastModified", iso(obj.mtime)), el("ETag", f'"{obj.etag}"')
        )
        return web.Response(body=body, content_type="application/xml")

    async def get(self, ctx: Ctx, *, head: bool) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "read", public=True)
        obj = await self.engine.head(ctx.bucket, ctx.key)
        if obj is None:
            raise S3Error("NoSuchKey", f"key {ctx.key!r} does not exist", resource=ctx.resource)
        check_conditions(obj, ctx.headers)
        headers = {
            "ETag": f'"{obj.etag}"',
            "Last-Modified": http_date(obj.mtime),
            "Accept-Ranges": "bytes",
            "Content-Type": obj.content_type,
        }
        for k, v in obj.user_meta.items():
            headers[k] = v
        if obj.parts:
            headers["x-amz-mp-parts-count"] = str(obj.parts)
        for q, h in OVERRIDES.items():
            if q in ctx.query:
                headers[h] = ctx.query[q]
        rng = (
            parse_range(ctx.headers.get("range", ""), obj.size) if "range" in ctx.headers else None
        )
        if "partNumber" in ctx.query:
            if "range" in ctx.headers:
                raise S3Error("InvalidRequest", "give a Range header or a partNumber, not both")
            n = self._part_number(ctx)
            rng = await self.engine.part_span(obj, n)
            if rng is None:
                raise S3Error(
                    "InvalidPartNumber",
                    f"{ctx.key!r} has no part {n} ({obj.parts or 1} part"
                    f"{'s' if obj.parts > 1 else ''})",
                    resource=ctx.resource,
                )
        status, start, end = 200, 0, obj.size
        if rng is not None:
            status, (start, end) = 206, rng
            shown = f"{start}-{end - 1}" if end > start else "*"  # an empty last part
            headers["Content-Range"] = f"bytes {shown}/{obj.size}"
        elif ctx.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            headers.update({f"x-amz-checksum-{k}": v for k, v in obj.checksums.items()})
        if head:
            headers["Content-Length"] = str(end - start)
            return web.Response(status=status, headers=headers)
        if end - start <= WHOLE:
            # read before the headers go out: one send, and a failed read is an S3 error
            body = await self.engine.read_whole(obj, start, end)
            return web.Response(status=status, headers=headers, body=body)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(ctx.request)
        transport = ctx.request.transport
        # over TLS the bytes must pass through Python anyway: no files
        files = transport is not None and transport.get_extra_info("sslcontext") is None
        pieces = self.engine.serve(obj, start, end) if files else self.engine.read(obj, start, end)
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    if isinstance(piece, FileSlice):
                        with piece.file:
                            await _send_file(ctx.request, resp, piece)
                    else:
                        await resp.write(piece)
        except ConnectionError as e:  # the client left mid-body: nothing to answer
            log.debug("GET %s: connection lost mid-body: %s", ctx.resource, e)
            if ctx.request.transport is not None:
                ctx.request.transport.close()
            return resp
        except (S3Error, CloudlessError) as e:
            # Headers are out: the only honest signal left is a cut connection (the client
            # sees fewer bytes than Content-Length and retries).
            log.warning("GET %s cut after headers: %s", ctx.resource, e)
            if ctx.request.transport is not None:
                ctx.request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    # ---- multipart -------------------------------------------------------------------------

    async def create_upload(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        if "x-amz-checksum-algorithm" in ctx.headers:
            alg = ctx.headers["x-amz-checksum-algorithm"].lower()
            if alg not in SUPPORTED_CHECKSUMS:
                raise S3Error("InvalidRequest", f"unknown checksum algorithm {alg!r}")
        upload_id = await self.engine.create_upload(
            ctx.bucket,
            ctx.key,
            content_type=ctx.headers.get("content-type", "binary/octet-stream"),
            user_meta=user_meta(ctx),
        )
        body = doc(
            "InitiateMultipartUploadResult",
            el("Bucket", ctx.bucket),
            el("Key", ctx.key),
            el("UploadId", upload_id),
        )
        return web.Response(body=body, content_type="application/xml")

    def _part_number(self, ctx: Ctx) -> int:
        raw = ctx.query.get("partNumber", "")
        try:
            n = int(raw)
        except ValueError:
            raise S3Error("InvalidArgument", f"partNumber {raw[:20]!r} is not an integer") from None
        Engine.check_part_number(n)
        return n

    async def upload_part(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        if "uploadId" not in ctx.query or "partNumber" not in ctx.query:
            raise S3Error("InvalidArgument", "upload part needs both partNumber and uploadId")
        n = self._part_number(ctx)
        if "x-amz-copy-source" in ctx.headers:
            return await self.upload_part_copy(ctx, n)
        part = await self.engine.upload_part(
            ctx.bucket,
            ctx.key,
            ctx.query["uploadId"],
            n,
            self.s.body(ctx, md5_by_caller=True),
            content_md5=self.s.declared_md5(ctx),
        )
        headers = {"ETag": f'"{part.etag}"'}
        headers.update({f"x-amz-checksum-{k}": v for k, v in ctx.checksums.items()})
        return web.Response(headers=headers)

    async def _readable_source(self, ctx: Ctx) -> tuple[str, str, ObjectMeta]:
        """The copy source named by ``x-amz-copy-source``, readable by this key, with its
        ``x-amz-copy-source-if-*`` conditions checked."""
        src_bucket, src_key = self._source(ctx)
        b = await self.s.iam.bucket(src_bucket)
        if b is None:
            raise S3Error("NoSuchBucket", f"source bucket {src_bucket!r} does not exist")
        if not b.permits(ctx.key_id, "read"):
            raise S3Error("AccessDenied", f"key {ctx.key_id} cannot read bucket {src_bucket!r}")
        src = await self.engine.head(src_bucket, src_key)
        if src is None:
            raise S3Error("NoSuchKey", f"source {src_bucket}/{src_key} does not exist")
        check_conditions(src, ctx.headers, prefix="x-amz-copy-source-if-")
        return src_bucket, src_key, src

    async def upload_part_copy(self, ctx: Ctx, n: int) -> web.StreamResponse:
        """A part made of (a byte range of) an existing object, streamed block by block."""
        _, _, src = await self._readable_source(ctx)
        start, end = 0, src.size
        raw = ctx.headers.get("x-amz-copy-source-range")
        if raw is not None:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", raw.strip())
            if not m or int(m[1]) > int(m[2]) or int(m[2]) >= src.size:
                raise S3Error(
                    "InvalidArgument",
                    f"x-amz-copy-source-range {raw!r}: bytes=first-last within the "
                    f"{src.size}-byte source",
                )
            start, end = int(m[1]), int(m[2]) + 1
        part = await self.engine.upload_part(
            ctx.bucket, ctx.key, ctx.query["uploadId"], n, self.engine.read(src, start, end)
        )
        body = doc(
            "CopyPartResult", el("LastModified", iso(part.mtime)), el("ETag", f'"{part.etag}"')
        )
        return web.Response(body=body, content_type="application/xml")

    async def complete(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        root = parse(await self.s.small_body(ctx), "CompleteMultipartUpload")
        chosen = []
        for p in children(root, "Part"):
            raw_n, etag = text(p, "PartNumber"), text(p, "ETag")
            try:
                n = int(raw_n or "")
            except ValueError:
                raise S3Error("MalformedXML", f"PartNumber {raw_n!r} is not an integer") from None
            if etag is None:
                raise S3Error("MalformedXML", f"part {n} has no ETag")
            chosen.append((n, etag.strip().strip('"')))
        obj = await self.engine.complete(ctx.bucket, ctx.key, ctx.query["uploadId"], chosen)
        body = doc(
            "CompleteMultipartUploadResult",
            el("Location", f"/{ctx.bucket}/{ctx.key}"),
            el("Bucket", ctx.bucket),
            el("Key", ctx.key),
            el("ETag", f'"{obj.etag}"'),
        )
        return web.Response(body=body, content_type="application/xml")

    async def list_parts(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "read")
        parts = await self.engine.list_parts(ctx.bucket, ctx.key, ctx.query["uploadId"])
        try:
            marker = int(ctx.query.get("part-number-marker", "0"))
            limit = min(1000, int(ctx.query.get("max-parts", "1000")))
        except ValueError:
            raise S3Error(
                "InvalidArgument", "part-number-marker / max-parts must be integers"
            ) from None
        after = [p for p in parts if p.number > marker]
        page = after[:limit]
        truncated = len(after) > limit
        items = "".join(
            "<Part>"
            + el("PartNumber", p.number)
            + el("LastModified", iso(p.mtime))
            + el("ETag", f'"{p.etag}"')
            + el("Size", p.size)
            + "</Part>"
            for p in page
        )
        body = doc(
            "ListPartsResult",
            el("Bucket", ctx.bucket),
            el("Key", ctx.key),
            el("UploadId", ctx.query["uploadId"]),
            el("PartNumberMarker", marker),
            el("NextPartNumberMarker", page[-1].number if page else marker),
            el("MaxParts", limit),
            el("IsTruncated", truncated),
            el("StorageClass", "STANDARD"),
            items,
        )
        return web.Response(body=body, content_type="application/xml")
