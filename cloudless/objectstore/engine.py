"""The object engine of one node: objects, copies, listings and multipart uploads over the
node's metadata tables (``metadb.py``) and blocks (``blocks.py``).

Contracts:

* a PUT commits its metadata only after the whole body was read and every block written; a
  body that fails (bad checksum, cut connection) leaves no object and its blocks are queued
  for GC;
* a reader sees either the old or the new version of a key, never a mix;
* objects up to ``INLINE_MAX`` bytes live inline in their metadata row (the raw bytes after
  the record's JSON head, checked against the ETag when the record is decoded; listings ask the
  replicas for heads only, ``shallow``); larger ones are split
  into ``BLOCK_SIZE`` blocks, one ``version_blocks`` row each, except a single PUT's body of
  one block: its object row's embedded block list is its only block list (one row less per
  replica); a version's references are released from its rows and its embedded list both;
* the version that loses a concurrent overwrite (LWW) releases its block references.

Errors are ``S3Error``s because the engine's only caller is the S3 API; the messages name the
bucket, key, upload or part at fault.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import logging
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from cloudless.lib.clock import Clock
from cloudless.objectstore.blocks import BLOCK_SIZE, INLINE_MAX, block_hash
from cloudless.objectstore.crdt import Entry
from cloudless.objectstore.layout import partition_of
from cloudless.objectstore.local import BLOCK_REFS
from cloudless.objectstore.records import (
    EMBED_MAX,
    OBJECTS,
    PARTS,
    PUTTING,
    UPLOADS,
    VERSION_BLOCKS,
    BlockRef,
    CorruptRecord,
    ObjectMeta,
    Part,
    Putting,
    Upload,
    block_pk,
    object_pk,
    part_pk,
    partition,
)
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.seams import Blocks, Commit, MetaTable, Tables

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 << 20
MAX_OBJECT = 5 << 40
PIPELINE = 4
"""Blocks of one upload being stored at once (their fsyncs and replica writes overlap)."""
FANOUT = 16
"""Row writes of one copy, completion or release in flight at once."""
SMALL = 64 << 10
"""Bodies up to this size are hashed on the event loop (a thread hand-off costs more)."""


def _first(e: BaseException) -> BaseException:
    """The error to report from a failed upload: an S3 error if any, else the first one."""
    if isinstance(e, BaseExceptionGroup):
        flat = [_first(x) for x in e.exceptions]
        s3 = [x for x in flat if isinstance(x, S3Error)]
        return (s3 or flat)[0]
    return e


class _Md5Lanes:
    """Single-thread executors that run MD5 updates: an upload's updates go to one lane in
    order, so they run in order with no event-loop round trip between two blocks (a chain of
    ``to_thread`` calls waits for the loop to notice each update's end before the next
    starts). Uploads take lanes in turn, so concurrent uploads hash on several cores."""

    def __init__(self, lanes: int) -> None:
        self._lanes = [
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"md5-{i}")
            for i in range(max(1, lanes))
        ]
        self._turn = itertools.count()

    def lane(self) -> concurrent.futures.ThreadPoolExecutor:
        return self._lanes[next(self._turn) % len(self._lanes)]


_MD5_LANES = _Md5Lanes(os.cpu_count() or 1)


class _Md5:
    """A body's MD5, updated block by block off the event loop, in the order of ``add``."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self._lane: concurrent.futures.ThreadPoolExecutor | None = None
        self._last: asyncio.Future[None] | None = None

    def add(self, data: bytes) -> asyncio.Future[None]:
        """Queue ``data``'s update; the future is done once it (and all before it) ran. A
        small first piece is hashed at once on the event loop (a hand-off costs more)."""
        if self._lane is None and len(data) <= SMALL:
            self.md5.update(data)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if self._lane is None:
            self._lane = _MD5_LANES.lane()
        self._last = asyncio.wrap_future(self._lane.submit(self.md5.update, data))
        return self._last

    async def hexdigest(self) -> str:
        if self._last is not None:
            await self._last
        return self.md5.hexdigest()


def _digests(data: bytes) -> tuple[str, str]:
    """(MD5 hex, block hash) of a one-block body, in one thread hand-off."""
    return hashlib.md5(data).hexdigest(), block_hash(data)


async def _pieces(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The rest of ``it``, leaving it open when the caller stops early."""
    while True:
        try:
            yield await anext(it)
        except StopAsyncIteration:
            return


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for piece in head:
        yield piece
    async for piece in _pieces(rest):
        yield piece


@dataclass(frozen=True)
class UploadListing:
    uploads: list[tuple[str, Upload]]
    prefixes: list[str]
    truncated: bool
    next_key: str
    """Where the next page starts (S3's ``NextKeyMarker``): the last key or common prefix
    listed."""
    next_upload_id: str
    """``NextUploadIdMarker``: the last upload's id when the page ends on an upload."""


def page_uploads(
    live: list[tuple[str, Upload]],
    *,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    limit: int,
) -> UploadListing:
    """One page of ListMultipartUploads over ``live`` ``(key, upload)`` pairs under ``prefix``:
    ordered by key then upload id; after ``key_marker`` (and, with it, the same key's uploads
    after ``upload_id_marker``, as S3 does; without ``key_marker`` the id marker is ignored);
    keys with ``delimiter`` after the prefix rolled into one common prefix each; at most
    ``limit`` uploads and prefixes together."""
    uploads: list[tuple[str, Upload]] = []
    prefixes: list[str] = []
    last: tuple[str, str] = ("", "")
    for key, up in sorted(live, key=lambda kv: (kv[0], kv[1].upload_id)):
        if not key.startswith(prefix):
            continue
        if key_marker:
            if upload_id_marker:
                if (key, up.upload_id) <= (key_marker, upload_id_marker):
                    continue
            elif key <= key_marker:
                continue
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[: cut + len(delimiter)]
            if (prefixes and prefixes[-1] == common) or (key_marker and common <= key_marker):
                continue
            if len(uploads) + len(prefixes) >= limit:
                return UploadListing(uploads, prefixes, True, *last)
            prefixes.append(common)
            last = (common, "")
            continue
        if len(uploads) + len(prefixes) >= limit:
            return UploadListing(uploads, prefixes, True, *last)
        uploads.append((key, up))
        last = (key, up.upload_id)
    return UploadListing(uploads, prefixes, False, *last)


async def _all_rows(table: MetaTable, part: int, prefix: str) -> list[tuple[str, Entry]]:
    """Every row of ``table`` in partition ``part`` under ``prefix``, tombstones included, in
    order, paging through the table."""
    out: list[tuple[str, Entry]] = []
    start, include = prefix, True
    while True:
        page = await table.range(part, start, prefix=prefix, limit=1000, include_start=include)
        out += page
        if len(page) < 1000:
            return out
        start, include = page[-1][0], False


Row = tuple[str, str, int, bytes | None]
"""``(table, pk, partition, value)``, as ``Tables.together`` writes it."""
MAX_PUT_S = 12 * 3600.0
"""A single PUT whose blocks took longer is refused before its commit: past
``ORPHAN_AFTER_S`` its version may have been released as abandoned."""
ORPHAN_AFTER_S = 2 * MAX_PUT_S
"""A ``putting`` row this old is settled (``Engine.settle_putting``): its writer has
committed, or given up, or died. Twice ``MAX_PUT_S``, for writers' clocks that differ."""


def putting_row(version: str, p: Putting) -> Row:
    """The ``putting`` row of a version under way (``records.Putting``)."""
    return (PUTTING, version, partition(p.bucket), p.encode())


def _check_md5(etag: str, content_md5: str | None) -> None:
    """``BadDigest`` unless the body's MD5 (``etag``) is the one the client declared."""
    if content_md5 is not None and etag != content_md5:
        raise S3Error("BadDigest", "the Content-MD5 you specified did not match the body")


def new_version() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class FileSlice:
    """``count`` bytes at ``offset`` of an open block file that ``Blocks.open`` checked
    (``Engine.serve``); whoever holds it closes ``file``."""

    file: BinaryIO
    offset: int
    count: int

    def read_sync(self) -> bytes:
        return os.pread(self.file.fileno(), self.count, self.offset)


def _close_result(done: asyncio.Future[Any]) -> None:
    """Close the file a fetch that nobody awaits any more opened (and consume its error)."""
    if done.cancelled() or done.exception() is not None:
        return
    r = done.result()
    if isinstance(r, FileSlice):
        r.file.close()
    elif r is not None and hasattr(r, "close"):
        r.close()


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
        tables: Tables,
        blocks: Blocks,
        clock: Clock,
        *,
        min_part_size: int = MIN_PART_SIZE,
    ) -> None:
        self.blocks = blocks
        self.clock = clock
        self.min_part_size = min_part_size
        self.tables = tables
        self.objects = tables.table(OBJECTS)
        self.version_blocks = tables.table(VERSION_BLOCKS)
        self.uploads = tables.table(UPLOADS)
        self.parts = tables.table(PARTS)
        self.refs = tables.table(BLOCK_REFS)
        self.putting = tables.table(PUTTING)

    def _ms(self) -> int:
        return int(self.clock.now() * 1000)

    async def _mark(self, version: str, p: Putting) -> None:
        """Write ``version``'s ``putting`` row on its own (before a copy or a completion
        links its rows; a PUT's rides with its blocks)."""
        _, pk, part, value = putting_row(version, p)
        await self.putting.put(pk, part, value, self._ms(), fresh=True)

    def _in_time(self, started: float, what: str, hint: str = "") -> None:
        """``RequestTimeout`` for an upload whose blocks took over ``MAX_PUT_S`` (from
        ``started``): past it, ``settle_putting`` may release its version as abandoned, so
        it must not be committed."""
        if self.clock.now() - started > MAX_PUT_S:
            raise S3Error(
                "RequestTimeout",
                f"{what}: the upload took over {MAX_PUT_S / 3600:.0f} h; send it again"
                + (f" {hint}" if hint else ""),
            )

    async def _ref(self, h: str, version: str, live: bool, *, fresh: bool = False) -> None:
        pk = f"{h}/{version}"
        part = partition_of(bytes.fromhex(h))
        await self.refs.put(pk, part, b"1" if live else None, self._ms(), fresh=fresh)

    async def _rows(self, version: str) -> list[tuple[str, Entry]]:
        """Every block row of ``version``, in order."""
        return await _all_rows(self.version_blocks, partition(version), version + "/")

    # ---- writing data ----------------------------------------------------------------------

    async def _store_stream(
        self,
        version: str,
        part: int,
        body: AsyncIterator[bytes],
        *,
        inline_ok: bool,
        content_md5: str | None = None,
        marker: Row | None = None,
    ) -> tuple[int, str, bytes | None, list[BlockRef]]:
        """Read ``body`` into blocks of ``version`` (up to ``PIPELINE`` blocks being hashed
        and stored at once while the body keeps streaming; the MD5 runs over them in order,
        off the event loop); returns (size, md5 hex, inline data or None, the blocks in
        order). On any error, a ``content_md5`` (hex) the MD5 does not match included, the
        blocks' references are dropped (GC reclaims them) and the first error is raised as
        itself. ``marker``: a row written with every block (the ``putting`` row of a single
        PUT, so a writer that dies mid-stream leaves a trace of its version)."""
        md5 = _Md5()
        pending: list[bytes | memoryview] = []
        have = 0
        size = 0
        offset = 0
        hashes: list[str] = []
        placed: dict[int, BlockRef] = {}
        inline: bytes | None = None
        slots = asyncio.Semaphore(PIPELINE)
        try:
            async with asyncio.TaskGroup() as tg:

                async def block(data: bytes, at: int) -> None:
                    await slots.acquire()
                    digested = md5.add(data)
                    tg.create_task(
                        self._put_block(
                            slots, version, part, at, data, hashes, placed, digested, marker
                        )
                    )

                async for piece in body:
                    size += len(piece)
                    if size > MAX_OBJECT:
                        raise S3Error("EntityTooLarge", f"object exceeds {MAX_OBJECT} bytes")
                    rest: bytes | memoryview = piece
                    while have + len(rest) >= BLOCK_SIZE:
                        cut = BLOCK_SIZE - have
                        view = memoryview(rest)
                        pending.append(view[:cut])
                        await block(b"".join(pending), offset)  # the one copy of the bytes
                        offset += BLOCK_SIZE
                        rest = view[cut:]
                        pending, have = [], 0
                    if len(rest):
                        pending.append(rest)
                        have += len(rest)
                tail = b"".join(pending)
                if inline_ok and size <= INLINE_MAX:
                    inline = tail
                    md5.add(tail)
                elif tail:
                    await block(tail, offset)
            await self.blocks.sync(hashes)  # one group commit before the object is committed
            etag = await md5.hexdigest()
            _check_md5(etag, content_md5)
        except BaseException as e:
            with contextlib.suppress(S3Error):
                for h in hashes:
                    await self._ref(h, version, False)
            raise _first(e) from None
        return size, etag, inline, [placed[at] for at in sorted(placed)]

    async def _put_block(
        self,
        slots: asyncio.Semaphore,
        version: str,
        part: int,
        offset: int,
        data: bytes,
        hashes: list[str],
        placed: dict[int, BlockRef],
        digested: asyncio.Future[None],
        marker: Row | None = None,
    ) -> None:
        """Hash and store one block; its slot is held until its MD5 update is done too (at
        most ``PIPELINE`` blocks in memory)."""
        try:
            small = len(data) <= SMALL
            h = block_hash(data) if small else await asyncio.to_thread(block_hash, data)
            hashes.append(h)
            placed[offset] = BlockRef(h, len(data))
            rows = self._block_rows(version, part, offset, h, data)
            await self.tables.together(
                [], rows if marker is None else [*rows, marker], [(h, data)], self._ms()
            )
            await digested
        finally:
            slots.release()

    def _block_rows(
        self, version: str, part: int, offset: int, h: str, data: bytes, *, listed: bool = True
    ) -> list[tuple[str, str, int, bytes | None]]:
        """A new block's reference and (``listed``) ``version_blocks`` rows, to go out with
        the block in one round trip: they belong to a version made by this upload, never
        written before, so they are written blind; a reference that arrives before its
        block only delays that block's GC."""
        ref = (BLOCK_REFS, f"{h}/{version}", partition_of(bytes.fromhex(h)), b"1")
        if not listed:
            return [ref]
        return [
            ref,
            (
                VERSION_BLOCKS,
                block_pk(version, part, offset),
                partition(version),
                BlockRef(h, len(data)).encode(),
            ),
        ]

    async def _release(self, version: str, embedded: tuple[BlockRef, ...] | None = None) -> None:
        """Drop a version's block rows and references (it was replaced or deleted):
        those its rows name and those of ``embedded``, its object row's block list (a
        one-block PUT's version has no rows), each reference once."""
        slots = asyncio.Semaphore(FANOUT)

        async def row(pk: str, h: str) -> None:
            async with slots:
                await self._ref(h, version, False)
                await self.version_blocks.put(pk, partition(version), None, self._ms())

        async def ref(h: str) -> None:
            async with slots:
                await self._ref(h, version, False)

        named: set[str] = set()
        async with asyncio.TaskGroup() as tg:
            for pk, e in await self._rows(version):
                if e.value is not None:
                    h = BlockRef.decode(e.value).hash
                    named.add(h)
                    tg.create_task(row(pk, h))
            for h in dict.fromkeys(b.hash for b in embedded or ()):
                if h not in named:
                    tg.create_task(ref(h))

    async def _link(self, version: str, rows: list[tuple[str, bytes]]) -> None:
        """Write a new version's block rows ``(pk, BlockRef bytes)`` and their references,
        ``FANOUT`` at a time (fresh rows: written blind)."""
        slots = asyncio.Semaphore(FANOUT)

        async def one(pk: str, value: bytes) -> None:
            async with slots:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(
                        self._ref(BlockRef.decode(value).hash, version, True, fresh=True)
                    )
                    tg.create_task(
                        self.version_blocks.put(
                            pk, partition(version), value, self._ms(), fresh=True
                        )
                    )

        try:
            async with asyncio.TaskGroup() as tg:
                for pk, value in rows:
                    tg.create_task(one(pk, value))
        except BaseExceptionGroup as e:
            raise _first(e) from None

    async def _commit(
        self, bucket: str, key: str, obj: ObjectMeta, prev: Entry | None
    ) -> ObjectMeta:
        """Write the object row over ``prev`` (read by the caller) and release what it
        superseded, or this version if a concurrent later write beat it."""
        pk = object_pk(bucket, key)
        c = await self.objects.commit(pk, partition(bucket), obj.encode(), self._ms(), prev)
        await self._settle(pk, partition(bucket), c)
        return obj

    async def _settle(self, pk: str, part: int, c: Commit) -> None:
        lost = c.lost
        if not c.complete:  # a replica did not report its states: read again
            after = await self.objects.entry(pk, part)
            lost = lost or after != c.entry
        gone = [ObjectMeta.head(e.value) for e in c.superseded() if e.value]
        if lost and c.entry.value is not None:
            gone.append(ObjectMeta.head(c.entry.value))
        try:
            async with asyncio.TaskGroup() as tg:
                for v, blocks in dict.fromkeys((m.version, m.blocks) for m in gone):
                    tg.create_task(self._release(v, blocks))
        except BaseExceptionGroup as e:
            raise _first(e) from None

    async def put(
        self,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        *,
        content_type: str,
        user_meta: dict[str, str],
        checksums: dict[str, str] | None = None,
        content_md5: str | None = None,
    ) -> ObjectMeta:
        """Store ``body`` as ``key``'s new version. ``content_md5``: the MD5 (hex) the client
        declared; a body whose MD5 differs is ``BadDigest`` and leaves nothing."""
        version = new_version()
        pk, part = object_pk(bucket, key), partition(bucket)
        started = self.clock.now()
        it = aiter(body)
        head: list[bytes] = []
        seen = 0
        async for piece in _pieces(it):
            head.append(piece)
            seen += len(piece)
            if seen > BLOCK_SIZE:
                break
        else:  # the body fits one block: the read rides with the block (one round trip)
            size, etag, inline, refs, got = await self._put_one(
                version, pk, part, b"".join(head), content_md5, (bucket, key, started)
            )
        if seen > BLOCK_SIZE:
            # The object row's previous state is read while the body streams (a round trip
            # less); what the commit superseded meanwhile comes back from the replicas.
            try:
                async with asyncio.TaskGroup() as tg:
                    prev = tg.create_task(self.objects.entry(pk, part))
                    stored = tg.create_task(
                        self._store_stream(
                            version,
                            0,
                            _chain(head, it),
                            inline_ok=True,
                            content_md5=content_md5,
                            marker=putting_row(version, Putting(bucket, key, started)),
                        )
                    )
            except BaseExceptionGroup as e:
                raise _first(e) from None
            size, etag, inline, refs = stored.result()
            got = prev.result()
        obj = ObjectMeta(
            version=version,
            size=size,
            etag=etag,
            mtime=self.clock.now(),
            content_type=content_type,
            user_meta=user_meta,
            inline=inline,
            checksums=checksums or {},
            blocks=tuple(refs) if inline is None and len(refs) <= EMBED_MAX else None,
        )
        if refs:
            self._in_time(started, f"{bucket}/{key}", "(as a multipart upload if it is large)")
        return await self._commit(bucket, key, obj, got)

    async def _put_one(
        self,
        version: str,
        pk: str,
        part: int,
        data: bytes,
        content_md5: str | None,
        who: tuple[str, str, float],
    ) -> tuple[int, str, bytes | None, list[BlockRef], Entry | None]:
        """A body of at most one block: inline, or its block and rows written in the same
        round as the object row's read; nothing written if it does not match ``content_md5``.
        (size, md5 hex, inline data, blocks, the row's previous state)."""
        if len(data) <= INLINE_MAX:
            etag = hashlib.md5(data).hexdigest()
            _check_md5(etag, content_md5)
            return len(data), etag, data, [], await self.objects.entry(pk, part)
        etag, h = _digests(data) if len(data) <= SMALL else await asyncio.to_thread(_digests, data)
        _check_md5(etag, content_md5)
        # the object row embeds this one block (EMBED_MAX >= 1): no version_blocks row; the
        # putting row names it instead until the commit is settled (settle_putting)
        rows = self._block_rows(version, 0, 0, h, data, listed=False)
        rows.append(putting_row(version, Putting(*who, blocks=(h,))))
        try:
            (prev,) = await self.tables.together(
                [(OBJECTS, pk, part)], rows, [(h, data)], self._ms()
            )
            await self.blocks.sync([h])
        except BaseException:
            with contextlib.suppress(S3Error):
                await self._ref(h, version, False)
            raise
        return len(data), etag, None, [BlockRef(h, len(data))], prev

    # ---- reading ---------------------------------------------------------------------------

    async def head(self, bucket: str, key: str) -> ObjectMeta | None:
        e = await self.objects.entry(object_pk(bucket, key), partition(bucket))
        if e is None or e.value is None:
            return None
        try:
            return ObjectMeta.decode(e.value)
        except CorruptRecord as err:  # its inline body was damaged where it is stored
            log.warning("%s/%s: %s", bucket, key, err)
            raise S3Error("InternalError", f"{bucket}/{key}: {err}") from None

    async def part_span(self, obj: ObjectMeta, number: int) -> tuple[int, int] | None:
        """Where part ``number`` (as uploaded) of ``obj`` lies: (start, end exclusive); None
        if it has no such part. An object from a single PUT is its own part 1."""
        if not obj.parts:
            return (0, obj.size) if number == 1 else None
        start = size = 0
        found = False
        for pk, e in await self._rows(obj.version):
            if e.value is None:
                continue
            part = int(pk.rsplit("/", 2)[1])
            n = BlockRef.decode(e.value).size
            if part < number:
                start += n
            elif part == number:
                found, size = True, size + n
            else:
                break
        return (start, start + size) if found else None

    async def read(self, obj: ObjectMeta, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes ``start`` to ``end`` (exclusive) of ``obj``, every block hash-checked before
        its bytes are yielded; the next block is fetched while the caller consumes one."""
        async with contextlib.aclosing(self._ahead(obj, start, end, files=False)) as pieces:
            async for piece in pieces:
                assert isinstance(piece, bytes)
                yield piece

    async def read_whole(self, obj: ObjectMeta, start: int, end: int) -> bytes:
        """``read``'s bytes joined (for a range small enough to hold): an inline or one-block
        object is read without the generator."""
        if obj.inline is not None:
            return obj.inline[start:end]
        if obj.blocks is not None and len(obj.blocks) == 1:
            data = await self._fetch(obj.blocks[0], start, end, False)
            assert isinstance(data, bytes)
            return data
        async with contextlib.aclosing(self.read(obj, start, end)) as pieces:
            return b"".join([p async for p in pieces])

    async def serve(
        self, obj: ObjectMeta, start: int, end: int
    ) -> AsyncGenerator[bytes | FileSlice, None]:
        """``read`` for a sender that can send files itself (``sendfile``): a block over
        ``SMALL`` on this node's disk comes as a ``FileSlice`` of its file as ``Blocks.open``
        checked it (hashed unless unchanged since this node wrote or verified it), which the
        caller sends and closes; other blocks come as bytes, hash-checked. Closing the
        iterator early closes any file it fetched ahead."""
        async with contextlib.aclosing(self._ahead(obj, start, end, files=True)) as pieces:
            async for piece in pieces:
                yield piece

    async def _segments(
        self, obj: ObjectMeta, start: int, end: int
    ) -> list[tuple[BlockRef, int, int]]:
        """The blocks holding bytes ``start`` to ``end`` of ``obj``: (block, first byte,
        end byte) within each."""
        if obj.blocks is not None:
            refs = list(obj.blocks)
        else:
            rows = await self._rows(obj.version)
            refs = [BlockRef.decode(e.value) for _, e in rows if e.value is not None]
        out = []
        pos = 0
        for ref in refs:
            lo, hi = pos, pos + ref.size
            pos = hi
            if hi <= start:
                continue
            if lo >= end:
                break
            out.append((ref, max(0, start - lo), min(ref.size, end - lo)))
        return out

    async def _fetch(self, ref: BlockRef, lo: int, hi: int, files: bool) -> bytes | FileSlice:
        if files and ref.size > SMALL:  # a small block costs less as bytes than as a file
            opening = asyncio.ensure_future(self.blocks.open(ref.hash))
            try:
                f = await asyncio.shield(opening)
            except asyncio.CancelledError:
                opening.add_done_callback(_close_result)  # the open finishes; its file closes
                raise
            if f is not None:
                return FileSlice(f, lo, hi - lo)
        data = await self.blocks.read(ref.hash)
        return data if lo == 0 and hi == len(data) else data[lo:hi]

    async def _ahead(
        self, obj: ObjectMeta, start: int, end: int, *, files: bool
    ) -> AsyncGenerator[bytes | FileSlice, None]:
        if obj.inline is not None:
            yield obj.inline[start:end]
            return
        segments = await self._segments(obj, start, end)
        pending: asyncio.Future[bytes | FileSlice] | None = None
        try:
            for i, (ref, lo, hi) in enumerate(segments):
                current = (
                    pending
                    if pending is not None
                    else asyncio.ensure_future(self._fetch(ref, lo, hi, files))
                )
                pending = None
                piece = await current
                if i + 1 < len(segments):
                    pending = asyncio.ensure_future(self._fetch(*segments[i + 1], files))
                yield piece
        finally:
            if pending is not None:
                pending.add_done_callback(_close_result)
                pending.cancel()

    async def delete(self, bucket: str, key: str) -> None:
        await self.delete_if(bucket, key, None)

    async def delete_if(self, bucket: str, key: str, version: str | None) -> bool:
        """Delete ``key`` (only if its current version is ``version``, unless None: a
        lifecycle expiry found that version due); False, and nothing written, if there is
        nothing to delete or it was rewritten since. A PUT whose commit races this one is
        ordered by its timestamp, as any two writes."""
        pk = object_pk(bucket, key)
        before = await self.objects.entry(pk, partition(bucket))
        if before is None or before.value is None:
            return False
        if version is not None and ObjectMeta.head(before.value).version != version:
            return False
        c = await self.objects.commit(pk, partition(bucket), None, self._ms(), before)
        await self._settle(pk, partition(bucket), c)
        return True

    async def settle_putting(
        self, part: int, now: float, *, older_than: float, limit: int
    ) -> tuple[int, int, int]:
        """Settle the ``putting`` rows of partition ``part`` written over ``older_than``
        seconds before ``now`` (their writers' clocks): a version that is its key's current
        one, or a part attempt a part row names (its upload's completion or abort releases
        it), was committed (its row is dropped); any other was abandoned by a writer that
        died before its commit, or superseded since (its references are released, again
        if need be: releasing is idempotent, then its row is dropped). At most ``limit``
        settled. Returns (committed, released, younger rows left)."""
        committed = released = young = 0
        after, include = "", True
        while committed + released < limit:
            page = await self.putting.range(part, after, limit=256, include_start=include)
            for version, e in page:
                if committed + released >= limit:
                    break
                if e.value is None:
                    continue
                try:
                    p = Putting.decode(e.value)
                except (ValueError, KeyError, TypeError) as err:
                    log.warning("putting row %s does not decode (left): %s", version, err)
                    continue
                if now - p.started < older_than:
                    young += 1
                    continue
                if p.upload is not None:  # a part attempt: its upload's end releases it
                    kept = any(a.version == version for a in await self._attempts(p.upload))
                else:
                    pk = object_pk(p.bucket, p.key)
                    row = await self.objects.entry(pk, partition(p.bucket))
                    value = None if row is None else row.value
                    kept = value is not None and ObjectMeta.head(value).version == version
                if kept:
                    committed += 1
                else:
                    embedded = tuple(BlockRef(h, 0) for h in p.blocks) if p.blocks else None
                    try:
                        await self._release(version, embedded)
                    except BaseExceptionGroup as eg:
                        raise _first(eg) from None
                    released += 1
                await self.putting.put(version, part, None, self._ms())
            if len(page) < 256:
                break
            after, include = page[-1][0], False
        return committed, released, young

    async def copy(
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
        pk = object_pk(bucket, key)
        prev = await self.objects.entry(pk, partition(bucket))
        if src.inline is None:
            rows = [
                (version + pk[len(src.version) :], e.value)
                for pk, e in await self._rows(src.version)
                if e.value
            ]
            if not rows and src.blocks:  # a one-block PUT's version: its embedded list
                offsets = itertools.accumulate((b.size for b in src.blocks), initial=0)
                rows = [
                    (block_pk(version, 0, at), b.encode())
                    for at, b in zip(offsets, src.blocks, strict=False)
                ]
            await self._mark(version, Putting(bucket, key, self.clock.now()))
            await self._link(version, rows)
        obj = replace(
            src,
            version=version,
            mtime=self.clock.now(),
            content_type=content_type,
            user_meta=user_meta,
        )
        return await self._commit(bucket, key, obj, prev)

    # ---- listing ---------------------------------------------------------------------------

    async def is_empty(self, bucket: str) -> bool:
        return not (await self.list_keys(bucket, prefix="", delimiter="", after="", limit=1)).keys

    async def list_keys(
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

        async def page(start: str, include: bool) -> list[tuple[str, Entry]]:
            """The next rows, heads only (a listing reads no body)."""
            part = partition(bucket)
            return await self.objects.range(
                part, start, prefix=base + prefix, limit=256, include_start=include, shallow=True
            )

        while len(keys) + len(prefixes) < limit:
            rows = await page(start, include)
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
                keys.append((key, ObjectMeta.head(e.value)))
                last = key
            if not jumped and len(rows) < 256:
                return Listing(keys, prefixes, False, last)
        more = await page(start, include)
        return Listing(keys, prefixes, any(e.value is not None for _, e in more), last)

    # ---- multipart -------------------------------------------------------------------------

    async def create_upload(
        self, bucket: str, key: str, *, content_type: str, user_meta: dict[str, str]
    ) -> str:
        upload_id = new_version()
        up = Upload(upload_id, self.clock.now(), content_type, user_meta)
        await self.uploads.put(
            f"{bucket}/{key}/{upload_id}", partition(bucket), up.encode(), self._ms()
        )
        return upload_id

    async def _upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        e = await self.uploads.entry(f"{bucket}/{key}/{upload_id}", partition(bucket))
        if e is None or e.value is None:
            raise S3Error(
                "NoSuchUpload",
                f"upload {upload_id!r} of {bucket}/{key} does not exist or was completed or "
                "aborted",
                resource=f"/{bucket}/{key}",
            )
        return Upload.decode(e.value)

    @staticmethod
    def check_part_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise S3Error("InvalidArgument", f"part number {number}: must be 1..{MAX_PARTS}")

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: AsyncIterator[bytes],
        *,
        content_md5: str | None = None,
    ) -> Part:
        """``content_md5``: as for ``put``."""
        self.check_part_number(number)
        await self._upload(bucket, key, upload_id)
        version = new_version()
        started = self.clock.now()
        marker = putting_row(version, Putting(bucket, key, started, upload=upload_id))
        size, etag, _, _ = await self._store_stream(
            version, 0, body, inline_ok=False, content_md5=content_md5, marker=marker
        )
        if size:
            self._in_time(started, f"part {number} of {bucket}/{key}")
        part = Part(number, etag, size, version, self.clock.now())
        ms = self._ms()
        await self.parts.put(
            part_pk(upload_id, number, ms), partition(upload_id), part.encode(), ms
        )
        return part

    async def _attempts(self, upload_id: str) -> list[Part]:
        rows = await self.parts.range(
            partition(upload_id), upload_id + "/", prefix=upload_id + "/", limit=100_000
        )
        return [Part.decode(e.value) for _, e in rows if e.value is not None]

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[Part]:
        """The latest attempt of each part, by part number."""
        await self._upload(bucket, key, upload_id)
        latest: dict[int, Part] = {}
        for p in await self._attempts(upload_id):
            latest[p.number] = p  # rows are in (number, timestamp) order
        return [latest[n] for n in sorted(latest)]

    async def complete(
        self, bucket: str, key: str, upload_id: str, chosen: list[tuple[int, str]]
    ) -> ObjectMeta:
        """Assemble the parts the client names (number, ETag) into the object."""
        up = await self._upload(bucket, key, upload_id)
        if not chosen:
            raise S3Error("MalformedXML", "CompleteMultipartUpload lists no parts")
        numbers = [n for n, _ in chosen]
        if numbers != sorted(set(numbers)):
            raise S3Error("InvalidPartOrder", "parts must be listed in ascending order, once each")
        attempts: dict[tuple[int, str], Part] = {}
        for p in await self._attempts(upload_id):
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
        now = self.clock.now()
        prev = await self.objects.entry(object_pk(bucket, key), partition(bucket))
        await self._mark(version, Putting(bucket, key, now))
        rows: list[tuple[str, bytes]] = []
        for part in picked:
            have = 0
            for pk, e in await self._rows(part.version):
                if e.value is not None:
                    offset = int(pk.rsplit("/", 1)[1])
                    rows.append((block_pk(version, part.number, offset), e.value))
                    have += BlockRef.decode(e.value).size
            if have != part.size:  # its attempt was released (settle_putting): never link less
                raise S3Error(
                    "InvalidPart",
                    f"part {part.number}: {have} of its {part.size} bytes are still stored; "
                    "upload it again",
                )
        await self._link(version, rows)
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
        obj = await self._commit(bucket, key, obj, prev)
        await self._finish_upload(bucket, key, upload_id)
        return obj

    async def abort(self, bucket: str, key: str, upload_id: str) -> None:
        await self._upload(bucket, key, upload_id)
        await self._finish_upload(bucket, key, upload_id)

    async def abort_if_open(self, bucket: str, key: str, upload_id: str) -> bool:
        """Abort an upload a lifecycle rule found due; False if it was completed or aborted
        since."""
        try:
            await self.abort(bucket, key, upload_id)
        except S3Error as e:
            if e.code == "NoSuchUpload":
                return False
            raise
        return True

    async def _finish_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Close the upload and release every part attempt's own references."""
        await self.uploads.put(f"{bucket}/{key}/{upload_id}", partition(bucket), None, self._ms())
        try:
            async with asyncio.TaskGroup() as tg:
                for p in await self._attempts(upload_id):
                    tg.create_task(self._release(p.version))
        except BaseExceptionGroup as e:
            raise _first(e) from None

    async def list_uploads(
        self,
        bucket: str,
        *,
        prefix: str,
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        limit: int,
    ) -> UploadListing:
        """One page of ``bucket``'s multipart uploads in progress under ``prefix``
        (``page_uploads``); every live upload under the prefix is read to order them."""
        live = [
            (pk[len(bucket) + 1 : pk.rfind("/")], Upload.decode(e.value))
            for pk, e in await _all_rows(self.uploads, partition(bucket), f"{bucket}/{prefix}")
            if e.value is not None
        ]
        return page_uploads(
            live,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            limit=limit,
        )
