"""The S3 HTTP front: one aiohttp handler that authenticates, routes and turns every failure
into an S3 error document (never a traceback or a bare 500).

Path-style addressing (``/<bucket>/<key>``), and virtual-host style (``Host:
<bucket>.<domain>``, path ``/<key>``) for the root domains the server is given; every
sub-resource this store does not implement answers ``NotImplemented`` (501).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import secrets
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import HttpVersion11, web

from cloudless.lib.clock import Clock
from cloudless.objectstore.engine import Engine
from cloudless.objectstore.s3 import chunked, cors, sigv4
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import Bucket, Iam
from cloudless.objectstore.s3.names import check_bucket, check_key
from cloudless.observability.metrics import S3_DURATION, S3_REQUESTS
from cloudless.store.errors import StoreError

log = logging.getLogger(__name__)

READ_SIZE = 1 << 18
"""Request bodies are read in pieces of this size."""


def _crc(name: str) -> tuple[Callable[[bytes, int], int], int]:
    """A CRC S3 knows: the running function (data, previous) and the digest's bytes. CRC32C
    and CRC64NVME come from ``awscrt``, the AWS SDKs' own C runtime (botocore computes them
    with it too), loaded on first use (~50 ms)."""
    if name == "crc32":
        return zlib.crc32, 4
    from awscrt import checksums

    return (checksums.crc64nvme, 8) if name == "crc64nvme" else (checksums.crc32c, 4)


class _Digest:
    """A running checksum with ``update`` and a base64 ``result`` (S3's encoding)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.crc = 0
        self.h = hashlib.new(name) if name in ("sha1", "sha256") else None
        self.fn, self.width = _crc(name) if self.h is None else (zlib.crc32, 4)

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)
        else:
            self.crc = self.fn(data, self.crc)

    def result(self) -> str:
        raw = self.h.digest() if self.h is not None else self.crc.to_bytes(self.width, "big")
        return base64.b64encode(raw).decode()


SUPPORTED_CHECKSUMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
"""Every ``x-amz-checksum-*`` algorithm S3 knows."""


@dataclass
class Ctx:
    """One authenticated request, routed."""

    request: web.Request
    key_id: str
    verified: sigv4.Verified
    bucket: str
    key: str
    query: dict[str, str]
    headers: dict[str, str]
    checksums: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"/{self.bucket}/{self.key}" if self.key else f"/{self.bucket}"


ANONYMOUS = sigv4.Verified("", sigv4.UNSIGNED, "", "", "", b"")
"""What an unsigned GET or HEAD carries in place of a signature (it has no body)."""

Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]
_CTX = web.RequestKey("s3_ctx", Ctx)
"""Where ``expect`` leaves the request's authenticated ``Ctx`` for ``dispatch``."""


def host_bucket(host: str, domains: Sequence[str]) -> str | None:
    """The bucket a virtual-host-style request names in its ``Host`` (``<bucket>.<domain>``,
    port ignored) for one of the S3 root ``domains``; None for path style (any other host,
    or a domain itself)."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal never names a bucket
        return None
    name = name.rsplit(":", 1)[0].rstrip(".")
    for d in domains:
        if name.endswith("." + d) and len(name) > len(d) + 1:
            return name[: -len(d) - 1]
    return None


class S3Server:
    def __init__(
        self,
        engine: Engine,
        iam: Iam,
        clock: Clock,
        *,
        region: str = "cloudless",
        domains: Sequence[str] = (),
    ) -> None:
        self.engine = engine
        self.iam = iam
        self.clock = clock
        self.region = region
        self.domains = tuple(d.lower().rstrip(".") for d in domains)
        """Root domains of virtual-host-style addressing (``<bucket>.<domain>``); requests
        to other hosts are path style."""
        from cloudless.objectstore.s3 import api_bucket, api_object

        self.buckets = api_bucket.BucketApi(self)
        self.objects = api_object.ObjectApi(self)
        self._rid_prefix = secrets.token_hex(4).upper()
        self._rids = itertools.count()

    def _request_id(self) -> str:
        """16 hex digits, unique per server: a random prefix per process, then a count."""
        return f"{self._rid_prefix}{next(self._rids) & 0xFFFFFFFF:08X}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=self.expect)
        app.on_response_prepare.append(self._cors_headers)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        run = self._preflight if request.method == "OPTIONS" else self.dispatch
        resp = await self._answer(request, run)
        assert resp is not None  # both always answer
        return resp

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        """A browser's CORS preflight (``OPTIONS``, never signed), answered from the bucket's
        CORS rules (``s3/cors.py``); a bucket that does not exist has none, so its answer
        tells nothing about which names exist."""
        bucket, key = self._names(request)
        if not bucket:
            raise S3Error("InvalidRequest", "a CORS preflight names a bucket")
        check_bucket(bucket)
        b = await self.iam.bucket(bucket)
        rules = cors.decode(b.cors) if b is not None else ()
        headers = {k.lower(): v for k, v in request.headers.items()}
        resource = f"/{bucket}/{key}" if key else f"/{bucket}"
        return web.Response(headers=cors.preflight(rules, headers, resource))

    async def _cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers of the bucket's matching rule to any answer (errors too) to
        a request with an ``Origin``, before it is sent."""
        origin = request.headers.get("Origin")
        if not origin or request.method == "OPTIONS" or not isinstance(request, web.Request):
            return
        ctx = request.get(_CTX)
        try:
            bucket = ctx.bucket if ctx is not None else self._names(request)[0]
            b = await self.iam.bucket(bucket) if bucket else None
        except (S3Error, StoreError):  # no rules known: no CORS headers
            return
        rule = cors.match(cors.decode(b.cors), origin, request.method) if b else None
        if rule is not None:
            response.headers.update(cors.answer_headers(rule, origin))

    def _names(self, request: web.Request) -> tuple[str, str]:
        """(bucket, key) a request names (path style, or the Host for virtual-host style);
        unchecked."""
        raw_path = request.raw_path.partition("?")[0]
        path = unquote(raw_path)
        if not path.startswith("/"):
            raise S3Error("InvalidRequest", "request path must start with '/'")
        host = request.headers.get("Host", "")
        named = host_bucket(host, self.domains) if self.domains else None
        if named is None:
            bucket, _, key = path[1:].partition("/")
            return bucket, key
        return named, path[1:]

    async def _answer(
        self,
        request: web.Request,
        run: Callable[[web.Request], Awaitable[web.StreamResponse | None]],
    ) -> web.StreamResponse | None:
        """``run(request)``'s response (None if it gave none), or the S3 error it raised (an
        unexpected exception is logged and answered ``InternalError``; a client gone
        mid-request closes the connection), with its request id."""
        rid = self._request_id()
        t0 = self.clock.monotonic()
        try:
            resp = await run(request)
            if resp is None:
                return None
        except S3Error as e:
            resp = self.error(request, e, rid)
        except ConnectionResetError as e:  # the client went away (its body cut off)
            resp = self._client_gone(request, e)
        except web.HTTPException:
            raise
        except StoreError as e:  # keys and buckets live in the cluster store (etcd)
            log.warning("s3 request %s %s: %s", request.method, request.path, e)
            unreachable = S3Error("ServiceUnavailable", f"the cluster store is unreachable: {e}")
            resp = self.error(request, unreachable, rid)
        except Exception:
            log.exception("s3 request %s %s failed", request.method, request.raw_path[:200])
            resp = self.error(request, S3Error("InternalError", "internal error; retry"), rid)
        resp.headers["x-amz-request-id"] = rid
        S3_REQUESTS.labels(request.method, str(resp.status)).inc()
        S3_DURATION.labels(request.method).observe(self.clock.monotonic() - t0)
        return resp

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: the signature, the names and, for a PUT or POST to an
        object, the key's write permission on the bucket are checked before the client is
        told to send its body. A refusal is answered at once and the connection closed (the
        body it announced never comes); other ``Expect`` values get 417."""
        refusal: web.StreamResponse | None
        if request.headers.get("expect", "").lower() != "100-continue":
            refusal = web.Response(status=417, text="only Expect: 100-continue is supported")
        else:
            refusal = await self._answer(request, self._precheck)
        try:
            if refusal is not None:
                # sent now, then the connection closed: the announced body never comes, and
                # waiting for it (aiohttp lingers on an unread body) would hold the client
                refusal.force_close()
                await refusal.prepare(request)
                await refusal.write_eof()
                request.protocol.force_close()
                return refusal
            if request.version >= HttpVersion11:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0  # the body's response has not started
        except ConnectionResetError as e:  # the client left while its request was checked
            return self._client_gone(request, e)
        return None

    @staticmethod
    def _client_gone(request: web.Request, e: ConnectionResetError) -> web.Response:
        """The client went away: nobody to answer. The connection is closed, and the response
        this returns, which aiohttp then fails to send, is dropped quietly."""
        log.debug("s3 request %s %s: client gone: %s", request.method, request.path, e)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=400)

    async def _precheck(self, request: web.Request) -> None:
        """What ``dispatch`` checks before it reads a body (raises its refusal); the request's
        context is kept for ``dispatch``."""
        ctx = request[_CTX] = await self._context(request)
        if ctx.bucket and ctx.key and request.method in ("PUT", "POST"):
            await self.bucket_for(ctx, "write")

    def error(self, request: web.Request, e: S3Error, rid: str) -> web.Response:
        headers = {"x-amz-request-id": rid}
        if e.code == "NotModified":
            return web.Response(status=304, headers=headers)
        if request.method == "HEAD":
            return web.Response(status=e.status, headers=headers)
        return web.Response(
            status=e.status,
            body=e.to_xml(rid),
            content_type="application/xml",
            headers=headers,
        )

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        ctx = request.get(_CTX) or await self._context(request)
        request[_CTX] = ctx
        if not ctx.bucket and not ctx.key_id:
            raise S3Error("AccessDenied", "anonymous requests cannot list buckets; sign with SigV4")
        if not ctx.bucket:
            if request.method != "GET":
                raise S3Error("MethodNotAllowed", f"{request.method} / is not allowed")
            return await self.buckets.list_buckets(ctx)
        if not ctx.key:
            return await self.buckets.dispatch(ctx)
        return await self.objects.dispatch(ctx)

    async def _context(self, request: web.Request) -> Ctx:
        """The request authenticated (SigV4) and its bucket and key names checked."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        headers: dict[str, str] = {}  # lowercase names; a repeated header's values joined
        for name, value in request.headers.items():
            low = name.lower()
            headers[low] = f"{headers[low]},{value}" if low in headers else value
        sreq = sigv4.Request(request.method, raw_path, raw_query, headers)
        parsed = sigv4.parse(sreq)
        if parsed is None:
            if request.method not in ("GET", "HEAD"):
                raise S3Error("AccessDenied", "anonymous requests may only read; sign with SigV4")
            key_id, verified = "", ANONYMOUS  # bucket_for lets it read a public bucket only
        else:
            key = await self.iam.key(parsed.key_id)
            if key is None:
                raise S3Error("InvalidAccessKeyId", f"access key {parsed.key_id!r} does not exist")
            key_id = key.key_id
            verified = sigv4.verify(sreq, parsed, key.secret, self.clock.now())
        bucket, obj_key = self._names(request)
        query = dict(sigv4.query_pairs(raw_query))
        if bucket:
            check_bucket(bucket)
        if obj_key:
            check_key(obj_key)
        return Ctx(request, key_id, verified, bucket, obj_key, query, headers)

    async def bucket_for(self, ctx: Ctx, need: str, *, public: bool = False) -> Bucket:
        """The bucket, if ``ctx``'s key has ``need`` on it; ``public``: a listing or an
        object read, which a ``public_read`` bucket allows anyone, unsigned requests
        included (nothing else is allowed to those)."""
        b = await self.iam.bucket(ctx.bucket)
        if not ctx.key_id and (b is None or not (public and b.public_read)):
            raise S3Error(  # the same answer whether the bucket exists or not
                "AccessDenied",
                "anonymous requests may only list and read buckets made public-read; sign "
                "with SigV4",
                resource=ctx.resource,
            )
        if b is None:
            raise S3Error(
                "NoSuchBucket", f"bucket {ctx.bucket!r} does not exist", resource=ctx.resource
            )
        if not b.permits(ctx.key_id, need) and not (public and need == "read" and b.public_read):
            raise S3Error(
                "AccessDenied",
                f"key {ctx.key_id} lacks {need} permission on bucket {ctx.bucket!r}",
                resource=ctx.resource,
            )
        return b

    # ---- request bodies --------------------------------------------------------------------

    def expected_checksums(self, ctx: Ctx) -> list[str]:
        """The checksum algorithms the client declared (header value or trailer)."""
        names = [
            h[len("x-amz-checksum-") :]
            for h in ctx.headers
            if h.startswith("x-amz-checksum-")
            and h != "x-amz-checksum-mode"
            and h != "x-amz-checksum-type"
        ]
        trailer = ctx.headers.get("x-amz-trailer", "")
        names += [
            t.strip().lower()[len("x-amz-checksum-") :]
            for t in trailer.split(",")
            if t.strip().lower().startswith("x-amz-checksum-")
        ]
        for n in names:
            if n not in SUPPORTED_CHECKSUMS:
                raise S3Error("InvalidRequest", f"unknown checksum algorithm x-amz-checksum-{n}")
        return names

    def declared_md5(self, ctx: Ctx) -> str | None:
        """The MD5 the client declared (``Content-MD5``), in hex, or None; ``InvalidDigest`` if
        the header is not 16 bytes of base64."""
        content_md5 = ctx.headers.get("content-md5")
        if content_md5 is None:
            return None
        try:
            want_md5 = base64.b64decode(content_md5, validate=True)
        except ValueError:
            raise S3Error("InvalidDigest", "Content-MD5 is not valid base64") from None
        if len(want_md5) != 16:
            raise S3Error("InvalidDigest", "Content-MD5 is not 16 bytes")
        return want_md5.hex()

    async def body(self, ctx: Ctx, *, md5_by_caller: bool = False) -> AsyncIterator[bytes]:
        """The request body, verified: a mismatch raises at the end of the stream, before the
        caller can commit anything. ``md5_by_caller``: the caller computes the body's MD5
        anyway (an object's ETag) and checks ``declared_md5`` itself, so it is not computed
        twice."""
        request, v = ctx.request, ctx.verified
        want_md5 = None if md5_by_caller else self.declared_md5(ctx)
        if "content-length" not in ctx.headers and "chunked" not in ctx.headers.get(
            "transfer-encoding", ""
        ):
            raise S3Error("MissingContentLength", "Content-Length header is required")
        algs = self.expected_checksums(ctx)
        digests = [_Digest(a) for a in algs]
        md5 = hashlib.md5() if want_md5 is not None else None
        sha = hashlib.sha256() if len(v.payload) == 64 else None
        trailers: dict[str, str] = {}
        if v.payload.startswith("STREAMING-"):
            source: AsyncIterator[bytes] = chunked.decode(request.content, v, trailers)
        else:
            source = request.content.iter_chunked(READ_SIZE)
        size = 0
        async for piece in source:
            size += len(piece)
            for d in digests:
                d.update(piece)
            if md5 is not None:
                md5.update(piece)
            if sha is not None:
                sha.update(piece)
            yield piece
        if v.payload.startswith("STREAMING-"):
            declared = ctx.headers.get("x-amz-decoded-content-length")
            if declared is not None and declared != str(size):
                raise S3Error(
                    "IncompleteBody",
                    f"x-amz-decoded-content-length says {declared} bytes, body had {size}",
                )
        elif "content-length" in ctx.headers and ctx.headers["content-length"] != str(size):
            raise S3Error("IncompleteBody", "body shorter than its Content-Length")
        if sha is not None and sha.hexdigest() != v.payload:
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "the body's SHA-256 does not match x-amz-content-sha256",
            )
        if md5 is not None and md5.hexdigest() != want_md5:
            raise S3Error("BadDigest", "the Content-MD5 you specified did not match the body")
        for d in digests:
            want = ctx.headers.get(f"x-amz-checksum-{d.name}") or trailers.get(
                f"x-amz-checksum-{d.name}"
            )
            if want is None:
                raise S3Error(
                    "InvalidRequest", f"x-amz-checksum-{d.name} was announced but not sent"
                )
            if want != d.result():
                raise S3Error(
                    "BadDigest",
                    f"the {d.name.upper()} you specified did not match the calculated checksum",
                )
            ctx.checksums[d.name] = want

    async def small_body(self, ctx: Ctx, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        async for piece in self.body(ctx):
            out += piece
            if len(out) > limit:
                raise S3Error("InvalidRequest", f"request body over {limit} bytes")
        return bytes(out)
