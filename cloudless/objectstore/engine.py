"""The object engine of one node: objects, copies, listings and multipart uploads over the
node's metadata tables (``metadb.py``) and blocks (``blocks.py``).

Contracts:

* a PUT commits its metadata only after the whole body was read and every block written; a
  body that fails (bad checksum, cut connection) leaves no object and its blocks are queued
  for GC;
* a reader sees either the old or the new version of a key, never a mix;
* objects up to ``INLINE_MAX`` bytes live inline in their metadata row; larger ones are split
  into ``BLOCK_SIZE`` blocks, one ``version_blocks`` row each;
* the version that loses a concurrent overwrite (LWW) releases its block references.

Errors are ``S3Error``s because the engine's only caller is the S3 API; the messages name the
bucket, key, upload or part at fault.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BLOCK_SIZE, INLINE_MAX, BlockStore, block_hash
from cloudless.objectstore.metadb import MetaDb
from cloudless.objectstore.records import (
    OBJECTS,
    PARTS,
    UPLOADS,
    VERSION_BLOCKS,
    BlockRef,
    ObjectMeta,
    Part,
    Upload,
    block_pk,
    object_pk,
    part_pk,
    partition,
)
from cloudless.objectstore.s3.errors import S3Error

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 << 20
MAX_OBJECT = 5 << 40


def new_version() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Listing:
    keys: list[tuple[str, ObjectMeta]]
    prefixes: list[str]
    truncated: bool
    last: str
    """The last key or common prefix returned (the next page starts after it)."""


class Engine:
    def __init__(
        self,
        meta: MetaDb,
        blocks: BlockStore,
        clock: Clock,
        *,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        self.meta = meta
        self.blocks = blocks
        self.clock = clock
        self.min_part_size = min_part_size
        self.objects = meta.table(OBJECTS)
        self.version_blocks = meta.table(VERSION_BLOCKS)
        self.uploads = meta.table(UPLOADS)
        self.parts = meta.table(PARTS)

    def _ms(self) -> int:
        return int(self.clock.now() * 1000)

    # ---- writing data ----------------------------------------------------------------------

    async def _store_stream(
        self, version: str, part: int, body: AsyncIterator[bytes], *, inline_ok: bool
    ) -> tuple[int, str, bytes | None, list[str]]:
        """Read ``body`` into blocks of ``version``; returns (size, md5 hex, inline data or
        None, block hashes written). On any error the written blocks are released."""
        md5 = hashlib.md5()
        buf = bytearray()
        size = 0
        offset = 0
        hashes: list[str] = []
        rows: list[tuple[str, BlockRef]] = []
        try:
            async for piece in body:
                md5.update(piece)
                size += len(piece)
                if size > MAX_OBJECT:
                    raise S3Error("EntityTooLarge", f"object exceeds {MAX_OBJECT} bytes")
                buf += piece
                while len(buf) >= BLOCK_SIZE:
                    data = bytes(buf[:BLOCK_SIZE])
                    del buf[:BLOCK_SIZE]
                    rows.append(await self._put_block(version, part, offset, data, hashes))
                    offset += len(data)
            if inline_ok and size <= INLINE_MAX:
                return size, md5.hexdigest(), bytes(buf), []
            if buf:
                rows.append(await self._put_block(version, part, offset, bytes(buf), hashes))
        except BaseException:
            now = self.clock.now()
            for h in hashes:
                self.blocks.drop_ref(h, version, now)
            raise
        return size, md5.hexdigest(), None, hashes

    async def _put_block(
        self, version: str, part: int, offset: int, data: bytes, hashes: list[str]
    ) -> tuple[str, BlockRef]:
        h = block_hash(data)
        await self.blocks.write(h, data)
        self.blocks.add_ref(h, version, self.clock.now())
        hashes.append(h)
        ref = BlockRef(h, len(data))
        pk = block_pk(version, part, offset)
        self.version_blocks.put(pk, partition(version), ref.encode(), self._ms())
        return pk, ref

    def _release(self, version: str) -> None:
        """Drop a version's block rows and references (it was replaced or deleted)."""
        now, ms = self.clock.now(), self._ms()
        for pk, e in self.version_blocks.range("", prefix=version + "/", limit=1 << 30):
            if e.value is None:
                continue
            self.blocks.drop_ref(BlockRef.decode(e.value).hash, version, now)
            self.version_blocks.put(pk, partition(version), None, ms)

    def _commit(self, bucket: str, key: str, obj: ObjectMeta) -> ObjectMeta:
        pk = object_pk(bucket, key)
        before = self.objects.entry(pk)
        mine = self.objects.stamp(pk, obj.encode(), self._ms())
        after = self.objects.merge(pk, partition(bucket), mine)
        if after != mine:  # lost to a concurrent, later write
            self._release(obj.version)
        elif before is not None and before.value is not None:
            old = ObjectMeta.decode(before.value)
            if old.version != obj.version:
                self._release(old.version)
        return obj

    async def put(
        self,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str,
        user_meta: dict[str, str],
        checksums: dict[str, str] | None = None,
    ) -> ObjectMeta:
        version = new_version()
        size, etag, inline, _ = await self._store_stream(version, 0, body, inline_ok=True)
        obj = ObjectMeta(
            version=version,
            size=size,
            etag=etag,
            mtime=self.clock.now(),
            content_type=content_type,
            user_meta=user_meta,
            inline=inline,
            checksums=checksums or {},
        )
        return self._commit(bucket, key, obj)

    # ---- reading ---------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectMeta | None:
        raw = self.objects.get(object_pk(bucket, key))
        return None if raw is None else ObjectMeta.decode(raw)

    async def read(self, obj: ObjectMeta, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of ``obj``."""
        if obj.inline is not None:
            yield obj.inline[start:end]
            return
        pos = 0
        for _, e in self.version_blocks.range("", prefix=obj.version + "/", limit=1 << 30):
            if e.value is None:
                continue
            ref = BlockRef.decode(e.value)
            lo, hi = pos, pos + ref.size
            pos = hi
            if hi <= start:
                continue
            if lo >= end:
                break
            data = await self.blocks.read(ref.hash)
            yield data[max(0, start - lo) : min(ref.size, end - lo)]

    def delete(self, bucket: str, key: str) -> None:
        pk = object_pk(bucket, key)
        before = self.objects.entry(pk)
        if before is None or before.value is None:
            return
        self.objects.put(pk, partition(bucket), None, self._ms())
        self._release(ObjectMeta.decode(before.value).version)

    def copy(
        self,
        src: ObjectMeta,
        bucket: str,
        key: str,
        *,
        content_type: str,
        user_meta: dict[str, str],
    ) -> ObjectMeta:
        """A new version sharing ``src``'s blocks (content addressing: no data is copied)."""
        version = new_version()
        now, ms = self.clock.now(), self._ms()
        if src.inline is None:
            for pk, e in self.version_blocks.range("", prefix=src.version + "/", limit=1 << 30):
                if e.value is None:
                    continue
                ref = BlockRef.decode(e.value)
                self.blocks.add_ref(ref.hash, version, now)
                tail = pk[len(src.version) :]
                self.version_blocks.put(version + tail, partition(version), e.value, ms)
        obj = replace(
            src, version=version, mtime=now, content_type=content_type, user_meta=user_meta
        )
        return self._commit(bucket, key, obj)

    # ---- listing ---------------------------------------------------------------------------

    def is_empty(self, bucket: str) -> bool:
        return not self.list_keys(bucket, prefix="", delimiter="", after="", limit=1).keys

    def list_keys(
        self, bucket: str, *, prefix: str, delimiter: str, after: str, limit: int
    ) -> Listing:
        """Keys of ``bucket`` under ``prefix`` strictly after ``after``, in byte order, keys
        sharing a ``delimiter``-ended prefix rolled into one common prefix."""
        base = bucket + "/"
        start = base + max(after, prefix)
        include = after < prefix
        keys: list[tuple[str, ObjectMeta]] = []
        prefixes: list[str] = []
        last = ""
        while len(keys) + len(prefixes) < limit:
            rows = self.objects.range(start, prefix=base + prefix, limit=256, include_start=include)
            if not rows:
                return Listing(keys, prefixes, False, last)
            include = False
            jumped = False
            for pk, e in rows:
                start = pk
                if e.value is None:
                    continue
                key = pk[len(base) :]
                if delimiter:
                    cut = key.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = key[: cut + len(delimiter)]
                        if prefixes and prefixes[-1] == common:
                            continue
                        if len(keys) + len(prefixes) >= limit:
                            return Listing(keys, prefixes, True, last)
                        prefixes.append(common)
                        last = common
                        # skip everything under the common prefix
                        start = base + common + "\U0010ffff"
                        jumped = True
                        break
                if len(keys) + len(prefixes) >= limit:
                    return Listing(keys, prefixes, True, last)
                keys.append((key, ObjectMeta.decode(e.value)))
                last = key
            if not jumped and len(rows) < 256:
                return Listing(keys, prefixes, False, last)
        more = self.objects.range(start, prefix=base + prefix, limit=256, include_start=include)
        return Listing(keys, prefixes, any(e.value is not None for _, e in more), last)

    # ---- multipart -------------------------------------------------------------------------

    def create_upload(
        self, bucket: str, key: str, *, content_type: str, user_meta: dict[str, str]
    ) -> str:
        upload_id = new_version()
        up = Upload(upload_id, self.clock.now(), content_type, user_meta)
        self.uploads.put(f"{bucket}/{key}/{upload_id}", partition(bucket), up.encode(), self._ms())
        return upload_id

    def _upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        raw = self.uploads.get(f"{bucket}/{key}/{upload_id}")
        if raw is None:
            raise S3Error(
                "NoSuchUpload",
                f"upload {upload_id!r} of {bucket}/{key} does not exist or was completed or "
                "aborted",
                resource=f"/{bucket}/{key}",
            )
        return Upload.decode(raw)

    @staticmethod
    def check_part_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"part number {number}: must be 1..{MAX_PARTS}")

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: AsyncIterator[bytes]
    ) -> Part:
        self.check_part_number(number)
        self._upload(bucket, key, upload_id)
        version = new_version()
        size, etag, _, _ = await self._store_stream(version, 0, body, inline_ok=False)
        part = Part(number, etag, size, version, self.clock.now())
        ms = self._ms()
        self.parts.put(part_pk(upload_id, number, ms), partition(upload_id), part.encode(), ms)
        return part

    def _attempts(self, upload_id: str) -> list[Part]:
        rows = self.parts.range("", prefix=upload_id + "/", limit=1 << 30)
        return [Part.decode(e.value) for _, e in rows if e.value is not None]

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        """The latest attempt of each part, by part number."""
        self._upload(bucket, key, upload_id)
        latest: dict[int, Part] = {}
        for p in self._attempts(upload_id):
            latest[p.number] = p  # rows are in (number, timestamp) order
        return [latest[n] for n in sorted(latest)]

    def complete(
        self, bucket: str, key: str, upload_id: str, chosen: list[tuple[int, str]]
    ) -> ObjectMeta:
        """Assemble the parts the client names (number, ETag) into the object."""
        up = self._upload(bucket, key, upload_id)
        if not chosen:
            raise S3Error("MalformedXML", "CompleteMultipartUpload lists no parts")
        numbers = [n for n, _ in chosen]
        if numbers != sorted(set(numbers)):
            raise S3Error("InvalidPartOrder", "parts must be listed in ascending order, once each")
        attempts: dict[tuple[int, str], Part] = {}
        for p in self._attempts(upload_id):
            attempts[(p.number, p.etag)] = p
        picked: list[Part] = []
        for i, (n, etag) in enumerate(chosen):
            self.check_part_number(n)
            part = attempts.get((n, etag.strip('"')))
            if part is None:
                raise S3Error("InvalidPart", f"part {n} with ETag {etag} was not uploaded")
            if i < len(chosen) - 1 and part.size < self.min_part_size:
                raise S3Error(
                    "EntityTooSmall",
                    f"part {n} is {part.size} bytes; every part but the last needs at least "
                    f"{self.min_part_size}",
                )
            picked.append(part)
        version = new_version()
        now, ms = self.clock.now(), self._ms()
        for part in picked:
            for pk, e in self.version_blocks.range("", prefix=part.version + "/", limit=1 << 30):
                if e.value is None:
                    continue
                ref = BlockRef.decode(e.value)
                offset = int(pk.rsplit("/", 1)[1])
                self.blocks.add_ref(ref.hash, version, now)
                self.version_blocks.put(
                    block_pk(version, part.number, offset), partition(version), e.value, ms
                )
        md5s = b"".join(bytes.fromhex(p.etag) for p in picked)
        obj = ObjectMeta(
            version=version,
            size=sum(p.size for p in picked),
            etag=f"{hashlib.md5(md5s).hexdigest()}-{len(picked)}",
            mtime=now,
            content_type=up.content_type,
            user_meta=up.user_meta,
            parts=len(picked),
        )
        self._finish_upload(bucket, key, upload_id)
        return self._commit(bucket, key, obj)

    def abort(self, bucket: str, key: str, upload_id: str) -> None:
        self._upload(bucket, key, upload_id)
        self._finish_upload(bucket, key, upload_id)

    def _finish_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Close the upload and release every part attempt's own references."""
        self.uploads.put(f"{bucket}/{key}/{upload_id}", partition(bucket), None, self._ms())
        for p in self._attempts(upload_id):
            self._release(p.version)

    def list_uploads(self, bucket: str, *, prefix: str, limit: int) -> list[tuple[str, Upload]]:
        rows = self.uploads.range("", prefix=f"{bucket}/{prefix}", limit=limit * 4 + 16)
        out = []
        for pk, e in rows:
            if e.value is None:
                continue
            key = pk[len(bucket) + 1 : pk.rfind("/")]
            out.append((key, Upload.decode(e.value)))
            if len(out) >= limit:
                break
        return out
