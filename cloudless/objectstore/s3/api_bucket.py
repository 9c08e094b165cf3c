"""Bucket requests: create, head, delete, location, listings (v1, v2), uploads, multi-delete."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cloudless.objectstore import lifecycle
from cloudless.objectstore.s3 import cors
from cloudless.objectstore.s3.errors import S3Error, not_implemented
from cloudless.objectstore.s3.lifecycle_xml import parse_rules, render_rules
from cloudless.objectstore.s3.xmlout import children, doc, el, iso, parse, text, url_encoded

if TYPE_CHECKING:
    from cloudless.objectstore.s3.iam import Bucket, Iam
    from cloudless.objectstore.s3.server import Ctx, S3Server

# Sub-resources a bucket request may name that this store does not implement.
UNSUPPORTED = {
    "accelerate", "analytics", "encryption", "intelligent-tiering",
    "inventory", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "tagging", "website",
}  # fmt: skip
MAX_KEYS = 1000


def xml(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/xml")


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@dataclass(frozen=True)
class RulesDoc:
    """A bucket sub-resource holding a rules document kept in the bucket record."""

    query: str
    what: str
    missing: str
    """The S3 code of a GET when the bucket has none."""
    limit: int
    """The largest body a PUT may send."""
    parse: Callable[[bytes], str]
    """The request's XML to what the record keeps (raises the S3 refusal)."""
    show: Callable[[Bucket], bytes | None]
    """The record's rules as XML, None if it has none."""
    store: Callable[[Iam, str, str], Awaitable[None]]


def _shown(rules: Sequence[object], render: Callable[[Any], bytes]) -> bytes | None:
    return render(rules) if rules else None


LIFECYCLE = RulesDoc(
    "lifecycle",
    "lifecycle",
    "NoSuchLifecycleConfiguration",
    256 << 10,
    lambda body: lifecycle.encode(parse_rules(body)),
    lambda b: _shown(lifecycle.decode(b.lifecycle), render_rules),
    lambda iam, name, value: iam.set_lifecycle(name, value),
)
CORS = RulesDoc(
    "cors",
    "CORS",
    "NoSuchCORSConfiguration",
    64 << 10,
    lambda body: cors.encode(cors.parse_cors(body)),
    lambda b: _shown(cors.decode(b.cors), cors.render_cors),
    lambda iam, name, value: iam.set_cors(name, value),
)


def canned_acl(ctx: Ctx) -> bool:
    """Whether a request's canned ACL (``x-amz-acl``) makes the bucket public-read; only
    ``private`` (the default) and ``public-read`` are supported."""
    acl = ctx.headers.get("x-amz-acl", "private")
    if acl not in ("private", "public-read"):
        raise not_implemented(f"canned ACL {acl!r} (only 'private' and 'public-read')")
    if any(h.startswith("x-amz-grant-") for h in ctx.headers):
        raise not_implemented("x-amz-grant-* headers; send x-amz-acl instead")
    return acl == "public-read"


def max_keys(ctx: Ctx, name: str = "max-keys") -> int:
    raw = ctx.query.get(name, str(MAX_KEYS))
    try:
        n = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", f"{name} {raw!r} is not an integer") from None
    if n < 0:
        raise S3Error("InvalidArgument", f"{name} {n} must be >= 0")
    return min(n, MAX_KEYS)


class BucketApi:
    def __init__(self, server: S3Server) -> None:
        self.s = server

    async def dispatch(self, ctx: Ctx) -> web.StreamResponse:
        m = ctx.request.method
        for q in ctx.query:
            if q in UNSUPPORTED:
                raise not_implemented(f"bucket sub-resource ?{q}")
        if "lifecycle" in ctx.query:
            return await self.lifecycle(ctx)
        if "cors" in ctx.query:
            return await self.cors(ctx)
        if "acl" in ctx.query:
            return await self.acl(ctx)
        if m == "PUT":
            return await self.create(ctx)
        if m == "HEAD":
            await self.s.bucket_for(ctx, "read", public=True)
            return web.Response(headers={"x-amz-bucket-region": self.s.region})
        if m == "DELETE":
            return await self.delete(ctx)
        if m == "GET":
            if "location" in ctx.query:
                await self.s.bucket_for(ctx, "read")
                return xml(
                    doc("LocationConstraint").replace(
                        b"></LocationConstraint>", f">{self.s.region}</LocationConstraint>".encode()
                    )
                )
            if "versioning" in ctx.query:
                await self.s.bucket_for(ctx, "read")
                return xml(doc("VersioningConfiguration"))
            if "uploads" in ctx.query:
                return await self.list_uploads(ctx)
            if "versions" in ctx.query:
                return await self.list_versions(ctx)
            if ctx.query.get("list-type") == "2":
                return await self.list_v2(ctx)
            if "list-type" in ctx.query:
                raise S3Error(
                    "InvalidArgument", f"list-type {ctx.query['list-type']!r}: 2 or absent"
                )
            return await self.list_v1(ctx)
        if m == "POST" and "delete" in ctx.query:
            return await self.delete_many(ctx)
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on a bucket")

    async def list_buckets(self, ctx: Ctx) -> web.StreamResponse:
        buckets = await self.s.iam.visible_buckets(ctx.key_id)
        items = "".join(
            "<Bucket>" + el("Name", b.name) + el("CreationDate", iso(b.created)) + "</Bucket>"
            for b in sorted(buckets, key=lambda b: b.name)
        )
        owner = "<Owner>" + el("ID", ctx.key_id) + el("DisplayName", ctx.key_id) + "</Owner>"
        return xml(doc("ListAllMyBucketsResult", owner, "<Buckets>", items, "</Buckets>"))

    async def create(self, ctx: Ctx) -> web.StreamResponse:
        body = await self.s.small_body(ctx, 64 << 10)
        if body.strip():
            root = parse(body, "CreateBucketConfiguration")
            loc = text(root, "LocationConstraint")
            if loc not in (None, "", self.s.region):
                raise S3Error(
                    "InvalidArgument",
                    f"LocationConstraint {loc!r}: this store's region is {self.s.region!r}",
                )
        if ctx.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true":
            raise not_implemented("object lock")
        await self.s.iam.create_bucket(ctx.bucket, ctx.key_id, public_read=canned_acl(ctx))
        return web.Response(headers={"Location": f"/{ctx.bucket}"})

    async def lifecycle(self, ctx: Ctx) -> web.StreamResponse:
        """Get, Put and DeleteBucketLifecycleConfiguration (rules: ``lifecycle.py``)."""
        return await self._rules(ctx, LIFECYCLE)

    async def _rules(self, ctx: Ctx, doc_: RulesDoc) -> web.StreamResponse:
        """A bucket's rules document (lifecycle, CORS): the owner sets and removes it, a
        reader reads it; none is ``doc_.missing``."""
        m = ctx.request.method
        if m == "GET":
            b = await self.s.bucket_for(ctx, "read")
            body = doc_.show(b)
            if body is None:
                raise S3Error(
                    doc_.missing,
                    f"bucket {ctx.bucket!r} has no {doc_.what} rules",
                    resource=ctx.resource,
                )
            return xml(body)
        if m == "PUT":
            await self.s.bucket_for(ctx, "owner")
            stored = doc_.parse(await self.s.small_body(ctx, doc_.limit))
            await doc_.store(self.s.iam, ctx.bucket, stored)
            return web.Response()
        if m == "DELETE":
            await self.s.bucket_for(ctx, "owner")
            await doc_.store(self.s.iam, ctx.bucket, "")
            return web.Response(status=204)
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on ?{doc_.query}")

    async def acl(self, ctx: Ctx) -> web.StreamResponse:
        """Get and PutBucketAcl, as the canned ACLs ``private`` and ``public-read`` (anyone
        may list the bucket and read its objects; ``Bucket.public_read``): the owner sets it,
        a reader reads it. Grants in a body, and other canned ACLs, are not supported."""
        m = ctx.request.method
        if m == "GET":
            b = await self.s.bucket_for(ctx, "read")
            owner = "<Owner>" + el("ID", b.owner) + el("DisplayName", b.owner) + "</Owner>"
            grants = (
                '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
                ' xsi:type="CanonicalUser">' + el("ID", b.owner) + el("DisplayName", b.owner)
                + "</Grantee>" + el("Permission", "FULL_CONTROL") + "</Grant>"
            )  # fmt: skip
            if b.public_read:
                grants += (
                    '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
                    ' xsi:type="Group">' + el("URI", ALL_USERS) + "</Grantee>"
                    + el("Permission", "READ") + "</Grant>"
                )  # fmt: skip
            return xml(doc("AccessControlPolicy", owner, "<AccessControlList>", grants,
                           "</AccessControlList>"))  # fmt: skip
        if m == "PUT":
            await self.s.bucket_for(ctx, "owner")
            if "x-amz-acl" not in ctx.headers:
                raise not_implemented(
                    "ACL grants in a body; send x-amz-acl: private or public-read"
                )
            public = canned_acl(ctx)
            await self.s.small_body(ctx, 64 << 10)
            await self.s.iam.set_public_read(ctx.bucket, public)
            return web.Response()
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on ?acl")

    async def cors(self, ctx: Ctx) -> web.StreamResponse:
        """Get, Put and DeleteBucketCors (``s3/cors.py``)."""
        return await self._rules(ctx, CORS)

    async def delete(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "owner")
        if not await self.s.engine.is_empty(ctx.bucket):
            raise S3Error(
                "BucketNotEmpty",
                f"bucket {ctx.bucket!r} is not empty: delete its objects first",
                resource=ctx.resource,
            )
        await self.s.iam.delete_bucket(ctx.bucket)
        return web.Response(status=204)

    def _contents(self, keys: list, encode: bool) -> str:  # type: ignore[type-arg]
        return "".join(
            "<Contents>"
            + el("Key", url_encoded(k, encode))
            + el("LastModified", iso(o.mtime))
            + el("ETag", f'"{o.etag}"')
            + el("Size", o.size)
            + el("StorageClass", "STANDARD")
            + "</Contents>"
            for k, o in keys
        )

    def _encoding(self, ctx: Ctx) -> bool:
        enc = ctx.query.get("encoding-type")
        if enc not in (None, "url"):
            raise S3Error("InvalidArgument", f"encoding-type {enc!r}: only 'url'")
        return enc == "url"

    async def list_v2(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "read", public=True)
        enc = self._encoding(ctx)
        prefix = ctx.query.get("prefix", "")
        delim = ctx.query.get("delimiter", "")
        limit = max_keys(ctx)
        token = ctx.query.get("continuation-token")
        after = ctx.query.get("start-after", "")
        if token is not None:
            try:
                after = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise S3Error("InvalidArgument", "continuation-token is not valid") from None
        page = await self.s.engine.list_keys(
            ctx.bucket, prefix=prefix, delimiter=delim, after=after, limit=limit
        )
        parts = [
            el("Name", ctx.bucket),
            el("Prefix", url_encoded(prefix, enc)),
            el("KeyCount", len(page.keys) + len(page.prefixes)),
            el("MaxKeys", limit),
            el("IsTruncated", page.truncated),
        ]
        if delim:
            parts.append(el("Delimiter", url_encoded(delim, enc)))
        if token is not None:
            parts.append(el("ContinuationToken", token))
        if "start-after" in ctx.query:
            parts.append(el("StartAfter", url_encoded(ctx.query["start-after"], enc)))
        if page.truncated:
            nxt = base64.urlsafe_b64encode(page.last.encode()).decode()
            parts.append(el("NextContinuationToken", nxt))
        if enc:
            parts.append(el("EncodingType", "url"))
        parts.append(self._contents(page.keys, enc))
        parts += [
            "<CommonPrefixes>" + el("Prefix", url_encoded(p, enc)) + "</CommonPrefixes>"
            for p in page.prefixes
        ]
        return xml(doc("ListBucketResult", *parts))

    async def list_versions(self, ctx: Ctx) -> web.StreamResponse:
        """ListObjectVersions on an unversioned bucket: each object is its only version,
        ``VersionId`` "null", latest."""
        await self.s.bucket_for(ctx, "read", public=True)
        enc = self._encoding(ctx)
        if ctx.query.get("version-id-marker"):
            raise not_implemented("version-id-marker (buckets are unversioned)")
        prefix = ctx.query.get("prefix", "")
        delim = ctx.query.get("delimiter", "")
        marker = ctx.query.get("key-marker", "")
        limit = max_keys(ctx)
        page = await self.s.engine.list_keys(
            ctx.bucket, prefix=prefix, delimiter=delim, after=marker, limit=limit
        )
        parts = [
            el("Name", ctx.bucket),
            el("Prefix", url_encoded(prefix, enc)),
            el("KeyMarker", url_encoded(marker, enc)),
            el("VersionIdMarker", ""),
            el("MaxKeys", limit),
            el("IsTruncated", page.truncated),
        ]
        if delim:
            parts.append(el("Delimiter", url_encoded(delim, enc)))
        if page.truncated:
            parts += [
                el("NextKeyMarker", url_encoded(page.last, enc)),
                el("NextVersionIdMarker", "null"),
            ]
        if enc:
            parts.append(el("EncodingType", "url"))
        parts += [
            "<Version>"
            + el("Key", url_encoded(k, enc))
            + el("VersionId", "null")
            + el("IsLatest", True)
            + el("LastModified", iso(o.mtime))
            + el("ETag", f'"{o.etag}"')
            + el("Size", o.size)
            + el("StorageClass", "STANDARD")
            + "</Version>"
            for k, o in page.keys
        ]
        parts += [
            "<CommonPrefixes>" + el("Prefix", url_encoded(p, enc)) + "</CommonPrefixes>"
            for p in page.prefixes
        ]
        return xml(doc("ListVersionsResult", *parts))

    async def list_v1(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "read", public=True)
        enc = self._encoding(ctx)
        prefix = ctx.query.get("prefix", "")
        delim = ctx.query.get("delimiter", "")
        marker = ctx.query.get("marker", "")
        limit = max_keys(ctx)
        page = await self.s.engine.list_keys(
            ctx.bucket, prefix=prefix, delimiter=delim, after=marker, limit=limit
        )
        parts = [
            el("Name", ctx.bucket),
            el("Prefix", url_encoded(prefix, enc)),
            el("Marker", url_encoded(marker, enc)),
            el("MaxKeys", limit),
            el("IsTruncated", page.truncated),
        ]
        if delim:
            parts.append(el("Delimiter", url_encoded(delim, enc)))
        if page.truncated:
            parts.append(el("NextMarker", url_encoded(page.last, enc)))
        if enc:
            parts.append(el("EncodingType", "url"))
        parts.append(self._contents(page.keys, enc))
        parts += [
            "<CommonPrefixes>" + el("Prefix", url_encoded(p, enc)) + "</CommonPrefixes>"
            for p in page.prefixes
        ]
        return xml(doc("ListBucketResult", *parts))

    async def list_uploads(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "read")
        enc = self._encoding(ctx)
        prefix = ctx.query.get("prefix", "")
        delim = ctx.query.get("delimiter", "")
        key_marker = ctx.query.get("key-marker", "")
        id_marker = ctx.query.get("upload-id-marker", "") if key_marker else ""
        limit = max_keys(ctx, "max-uploads")
        page = await self.s.engine.list_uploads(
            ctx.bucket,
            prefix=prefix,
            delimiter=delim,
            key_marker=key_marker,
            upload_id_marker=id_marker,
            limit=limit,
        )
        parts = [
            el("Bucket", ctx.bucket),
            el("KeyMarker", url_encoded(key_marker, enc)),
            el("UploadIdMarker", id_marker),
            el("Prefix", url_encoded(prefix, enc)),
            el("MaxUploads", limit),
            el("IsTruncated", page.truncated),
        ]
        if page.truncated:
            parts.append(el("NextKeyMarker", url_encoded(page.next_key, enc)))
            parts.append(el("NextUploadIdMarker", page.next_upload_id))
        if delim:
            parts.append(el("Delimiter", url_encoded(delim, enc)))
        if enc:
            parts.append(el("EncodingType", "url"))
        parts += [
            "<Upload>"
            + el("Key", url_encoded(k, enc))
            + el("UploadId", u.upload_id)
            + el("Initiated", iso(u.created))
            + el("StorageClass", "STANDARD")
            + "</Upload>"
            for k, u in page.uploads
        ]
        parts += [
            "<CommonPrefixes>" + el("Prefix", url_encoded(p, enc)) + "</CommonPrefixes>"
            for p in page.prefixes
        ]
        return xml(doc("ListMultipartUploadsResult", *parts))

    async def delete_many(self, ctx: Ctx) -> web.StreamResponse:
        await self.s.bucket_for(ctx, "write")
        root = parse(await self.s.small_body(ctx), "Delete")
        quiet = (text(root, "Quiet") or "").lower() == "true"
        objs = children(root, "Object")
        if len(objs) > 1000:
            raise S3Error("MalformedXML", f"{len(objs)} objects; at most 1000 per request")
        done, errors = [], []
        for o in objs:
            key = text(o, "Key")
            if not key or len(key.encode()) > 1024:
                errors.append(
                    "<Error>"
                    + el("Key", key or "")
                    + el("Code", "InvalidArgument")
                    + el("Message", "key is empty or over 1024 bytes")
                    + "</Error>"
                )
                continue
            if text(o, "VersionId"):
                errors.append(
                    "<Error>"
                    + el("Key", key)
                    + el("Code", "NotImplemented")
                    + el("Message", "versioned delete is not supported")
                    + "</Error>"
                )
                continue
            await self.s.engine.delete(ctx.bucket, key)
            if not quiet:
                done.append("<Deleted>" + el("Key", key) + "</Deleted>")
        return xml(doc("DeleteResult", *done, *errors))
