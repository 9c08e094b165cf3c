"""Content-addressed data blocks on one node's disk, their reference counts and delayed GC.

* A block is at most ``BLOCK_SIZE`` bytes named by its blake3 hash; objects up to
  ``INLINE_MAX`` bytes never become blocks (they live inline in the object's metadata).
* ``write`` puts the bytes in a temporary file in the block's directory, fsyncs it, renames
  it into place and fsyncs the directory: once ``write`` returns the block survives a power
  cut, and a block file either does not exist or is complete. Writing an existing block
  is a no-op (same name, same content).
* ``read`` re-hashes what it read; a mismatch moves the file to ``corrupt/`` and raises
  ``CorruptBlock`` (the caller reads another replica and the resync brings a good copy back).
  Small blocks (up to ``SYNC_MAX``) are kept in memory once written or read and hashed, up
  to ``small_cache_bytes``: ``read`` answers those without touching the disk, with bytes
  that passed their hash check (damage to the file after that is the scrub's to find).
  ``read_sync``, the scrub's read, always reads and hashes the file.
* ``open`` hands back the open file instead of its bytes, for a caller that sends it without
  copying it through Python (``sendfile``). It re-hashes the file unless this store wrote or
  verified that very file since it started: same inode, size, modification and change time
  as then (the last ``TRUSTED_MAX`` such files are remembered). A file changed through the
  file system since (rewritten, truncated, replaced) is hashed again before any byte of it is
  handed out; damage that leaves the file's metadata alone (media rot) is the scrub's to find
  (``scrub.py``, which always re-hashes).
* References are rows ``<hash>/<version>`` of the ``block_refs`` LWW table (so they replicate
  like any metadata); whenever one changes, ``reconsider`` queues a block whose count is zero
  for deletion ``gc_delay`` seconds later, and ``collect`` deletes it then only if still
  unreferenced (a re-upload in between rescues it). ``write`` of a block queued for deletion
  takes it off the queue before it looks for the file, and ``collect`` runs on the event loop
  like ``write``'s start (in bounded batches): so a writer that finds the file present never
  sees it unlinked before its reference lands (``collect`` in a thread could check the
  count, let a re-upload find the file and reference it, then unlink it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, cast

import blake3

from cloudless.lib.errors import CloudlessError
from cloudless.objectstore.metadb import DiskFull, MetaDb, full

BLOCK_SIZE = 1 << 20
INLINE_MAX = 16 << 10
GC_DELAY = 600.0
SYNC_MAX = 64 << 10
"""Blocks up to this size are read and written on the event loop: a thread hand-off costs
more than the I/O (and on a loaded machine, milliseconds)."""
SMALL_CACHE_BYTES = 16 << 20
"""Bytes of small blocks ``read`` answers from memory by default (least recently used
dropped)."""
TRUSTED_MAX = 16384
"""Block files whose hash check ``open`` remembers (~400 bytes of memory each)."""
_HASH = re.compile(r"[0-9a-f]{64}\Z")

Signature = tuple[int, int, int, int]
"""(inode, size, mtime ns, ctime ns) of a block file."""


def _signature(st: os.stat_result) -> Signature:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CorruptBlock(CloudlessError):
    code = "corrupt_block"


class MissingBlock(CloudlessError):
    code = "missing_block"


class NowhereBlock(MissingBlock):
    """Every replica asked answered that it does not hold the block (none was unreachable,
    none held a corrupt copy)."""


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _subdirs(path: Path) -> list[Path]:
    """The two-hex-digit fan-out directories under ``path`` (``corrupt/`` is not one)."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path) for e in entries if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
    )


def block_hash(data: bytes | memoryview) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range(2)`` (absent from ``os``), or None where libc lacks it."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_sync_file_range = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk without waiting (a hint: errors surface
    at the fsync that follows)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


_scratch = threading.local()


def _file_hash(f: io.FileIO) -> str:
    """blake3 of an open block file, read into this thread's reusable buffer (a fresh 1 MiB
    ``bytes`` per read costs page faults that outweigh the hash)."""
    buf: bytearray | None = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = bytearray(BLOCK_SIZE + 1)
    h = blake3.blake3(max_threads=1)
    view = memoryview(buf)
    while n := f.readinto(view):
        h.update(view[:n])
    return h.hexdigest()


class BlockStore:
    def __init__(
        self,
        root: Path,
        meta: MetaDb,
        *,
        gc_delay: float = GC_DELAY,
        fsync_each: bool = True,
        small_cache_bytes: int | None = None,
    ) -> None:
        self.root = root
        self._root = str(root)
        self.gc_delay = gc_delay
        self.fsync_each = fsync_each
        """False: a durable write's fsync is left to the next ``flush`` (group commit by
        time, as SQLite's WAL leaves its own to checkpoints); the replicas in other zones
        cover the window."""
        self._deferred: dict[str, None] = {}
        self._trusted: OrderedDict[str, Signature] = OrderedDict()
        self._trusting = threading.Lock()
        """Guards ``_trusted`` and ``_small`` (a write or a read may run in a thread)."""
        self._small: OrderedDict[str, bytes] = OrderedDict()
        self._small_bytes = 0
        self.small_cache_bytes = (
            SMALL_CACHE_BYTES if small_cache_bytes is None else small_cache_bytes
        )
        """Bytes of small blocks held for ``read`` (``SMALL_CACHE_BYTES`` by default)."""
        self.refs = meta.table("block_refs")
        self.db = meta.db
        self.node = meta.writer
        self.db.execute("CREATE TABLE IF NOT EXISTS block_gc (hash TEXT PRIMARY KEY, due REAL)")
        self._queued = {h for (h,) in self.db.execute("SELECT hash FROM block_gc")}
        """The hashes in ``block_gc`` (a write checks it without a statement)."""
        (root / "corrupt").mkdir(parents=True, exist_ok=True)

    def path(self, h: str) -> Path:
        return Path(self._file(h))

    def _file(self, h: str) -> str:
        """``path`` as a string (no ``Path`` built on the read and write paths)."""
        if not _HASH.match(h):
            raise ValueError(f"block hash {h!r}: 64 lowercase hex digits")
        return f"{self._root}/{h[:2]}/{h[2:4]}/{h}"

    # ---- data ------------------------------------------------------------------------------

    def write_sync(self, h: str, data: bytes, *, durable: bool = True) -> bool:
        """Store ``data`` as block ``h`` (its hash); False if it was already there. With
        ``durable=False`` nothing is fsynced: the caller must ``sync`` before relying on it
        (group commit: one journal flush for a whole upload instead of two per block)."""
        final = self._file(h)
        if os.path.exists(final):
            return False
        tmp = f"{final}.tmp.{secrets.token_hex(4)}"
        try:
            try:
                f = open(tmp, "wb")  # closed by the with below
            except FileNotFoundError:  # the block's directory is new: one mkdir, then again
                os.makedirs(os.path.dirname(final), exist_ok=True)
                f = open(tmp, "wb")
            with f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
                elif len(data) > SYNC_MAX:
                    # the fsync that makes it durable later then waits for little I/O
                    _start_writeback(f.fileno())
            os.replace(tmp, final)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if full(e):
                raise DiskFull(self.node, f"block {h}") from e
            raise
        self._trust(h, _signature(os.stat(final)))  # after the rename, which sets its ctime
        if len(data) <= SYNC_MAX:
            self._keep(h, bytes(data))
        if durable:
            _fsync_dir(os.path.dirname(final))  # the rename itself must survive a power cut
        return True

    async def write(self, h: str, data: bytes, *, durable: bool = True) -> bool:
        """``write_sync``; in a thread unless small and not synced now (an fsync never
        blocks the event loop). With ``fsync_each`` off, a durable write is synced by the
        next ``flush``."""
        self._unqueue(h)  # the caller references it next: its deletion is off
        now = durable and self.fsync_each
        if len(data) <= SYNC_MAX and not now:
            new = self.write_sync(h, data, durable=False)
        else:
            new = await asyncio.to_thread(self.write_sync, h, data, durable=now)
        if new and durable and not now:
            self._deferred[h] = None
        return new

    async def flush(self) -> int:
        """fsync the blocks (and their directories) whose fsync ``write`` deferred; returns
        how many. A block removed meanwhile is skipped."""
        hashes = list(self._deferred)
        self._deferred.clear()
        if hashes:
            try:
                await asyncio.to_thread(self.sync_sync, hashes, missing_ok=True)
            except OSError:
                self._deferred.update(dict.fromkeys(hashes))  # the next flush tries again
                raise
        return len(hashes)

    def sync_sync(self, hashes: list[str], *, missing_ok: bool = False) -> None:
        """Make blocks written with ``durable=False`` (and their renames) durable."""
        dirs: set[Path] = set()
        for h in dict.fromkeys(hashes):
            p = self.path(h)
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                if missing_ok:
                    continue
                raise
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs.add(p.parent)
        for d in sorted(dirs):
            _fsync_dir(d)

    async def sync(self, hashes: list[str]) -> None:
        if hashes:
            await asyncio.to_thread(self.sync_sync, list(hashes))

    def read_sync(self, h: str) -> bytes:
        """Block ``h``'s bytes, always re-hashed (the scrub's check)."""
        try:
            with open(self._file(h), "rb", buffering=0) as f:
                return self._read_open(h, f)
        except FileNotFoundError:
            raise MissingBlock(f"block {h} is not on this node") from None

    def _read_open(self, h: str, f: io.FileIO) -> bytes:
        """``read_sync`` of block ``h``'s file ``f``, open at offset 0."""
        signature = _signature(os.fstat(f.fileno()))
        data = f.readall()
        if block_hash(data) != h:
            self._quarantine(h)
        self._trust(h, signature)
        if len(data) <= SYNC_MAX:
            self._keep(h, data)
        return data

    def _keep(self, h: str, data: bytes) -> None:
        """Hold small block ``h``'s bytes (checked against ``h``) for ``read``."""
        with self._trusting:
            self._unhold(h)
            self._small[h] = data
            self._small_bytes += len(data)
            while self._small_bytes > self.small_cache_bytes:
                self._small_bytes -= len(self._small.popitem(last=False)[1])

    def _kept(self, h: str) -> bytes | None:
        with self._trusting:
            data = self._small.get(h)
            if data is not None:
                self._small.move_to_end(h)
            return data

    def forget(self, h: str) -> None:
        """Neither trust nor hold block ``h`` any more (its file is going, or was damaged on
        purpose): its next ``read`` or ``open`` reads and hashes the file."""
        with self._trusting:
            self._trusted.pop(h, None)
            self._unhold(h)

    def _unhold(self, h: str) -> None:
        """Drop block ``h``'s held bytes, if any (the caller holds ``_trusting``)."""
        data = self._small.pop(h, None)
        if data is not None:
            self._small_bytes -= len(data)

    def _quarantine(self, h: str) -> NoReturn:
        self.forget(h)
        os.replace(self.path(h), self.root / "corrupt" / h)
        raise CorruptBlock(f"block {h} failed its hash check; moved to corrupt/")

    def _trust(self, h: str, signature: Signature) -> None:
        with self._trusting:
            self._trusted[h] = signature
            self._trusted.move_to_end(h)
            while len(self._trusted) > TRUSTED_MAX:
                self._trusted.popitem(last=False)

    def _trusts(self, h: str, signature: Signature) -> bool:
        with self._trusting:
            return self._trusted.get(h) == signature

    async def read(self, h: str) -> bytes:
        """``read_sync``: a small block from memory if held (module docstring), else on the
        event loop (one open, no hand-off); a large one in a thread."""
        data = self._kept(h)
        if data is not None:
            return data
        try:
            f = open(self._file(h), "rb", buffering=0)  # noqa: ASYNC230 (an open is ~10 us)
        except FileNotFoundError:
            raise MissingBlock(f"block {h} is not on this node") from None
        with f:
            if os.fstat(f.fileno()).st_size <= SYNC_MAX:
                return self._read_open(h, f)
        # a large one is read by a thread that opens it itself: were this call cancelled,
        # a file shared with the thread could be closed (its descriptor reused) mid-read
        return await asyncio.to_thread(self.read_sync, h)

    def open_sync(self, h: str) -> io.FileIO:
        """Block ``h``'s file open for reading (at offset 0), hash-checked first unless this
        store wrote or verified this very file (module docstring); the caller closes it.
        Raises ``MissingBlock``, or ``CorruptBlock`` after moving the file to ``corrupt/``,
        as ``read_sync`` does."""
        try:
            f = open(self._file(h), "rb", buffering=0)
        except FileNotFoundError:
            raise MissingBlock(f"block {h} is not on this node") from None
        try:
            signature = _signature(os.fstat(f.fileno()))
            if self._trusts(h, signature):
                return f
            ok = _file_hash(f) == h
            f.seek(0)
        except BaseException:
            f.close()
            raise
        if not ok:
            f.close()
            self._quarantine(h)
        self._trust(h, signature)
        return f

    async def open(self, h: str) -> io.FileIO:
        """``open_sync``: on the event loop when no hashing is due (or the block is small),
        else in a thread."""
        try:
            st = os.stat(self._file(h))
        except FileNotFoundError:
            raise MissingBlock(f"block {h} is not on this node") from None
        if st.st_size <= SYNC_MAX or self._trusts(h, _signature(st)):
            return self.open_sync(h)
        return await asyncio.to_thread(self.open_sync, h)

    def has(self, h: str) -> bool:
        return self.path(h).exists()

    def check_recent(self, since: float) -> list[str]:
        """Verify every block whose file changed at or after ``since`` (file time, seconds
        since the epoch); returns those that failed (each moved to ``corrupt/``).

        After an unclean stop, a block written with its fsync deferred (``fsync_each``
        off) can come back truncated or empty while its reference rows survived: it would
        count as present (``has``) and anti-entropy, which compares rows, would never fetch
        it again. Only blocks written shortly before the stop are at risk, so only those
        are re-read."""
        bad = []
        for first in _subdirs(self.root):
            for second in _subdirs(first):
                for entry in os.scandir(second):
                    name = entry.name
                    if len(name) != 64 or not entry.is_file():
                        continue
                    if entry.stat().st_mtime < since:
                        continue
                    try:
                        self.read_sync(name)
                    except CorruptBlock:
                        bad.append(name)
                    except MissingBlock:
                        pass  # collected meanwhile
        return sorted(bad)

    def remove_temps(self) -> int:
        """Delete temporary files left by a crash mid-write; returns how many."""
        n = 0
        for p in self.root.glob("??/??/*.tmp.*"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    # ---- references and GC -----------------------------------------------------------------

    def refcount(self, h: str) -> int:
        return sum(1 for _, e in self.refs.range("", prefix=h + "/", limit=1 << 30) if e.value)

    def reconsider(self, h: str, now: float, *, live: bool = False) -> None:
        """Queue ``h`` for deletion if nothing references it (after a local or merged change).
        ``live``: the changed reference is live, so the block is referenced (no count)."""
        if not live and self.refcount(h) == 0:
            self.db.execute(
                "INSERT OR IGNORE INTO block_gc(hash, due) VALUES (?, ?)", (h, now + self.gc_delay)
            )
            self._queued.add(h)
        else:
            self._unqueue(h)

    def _unqueue(self, h: str) -> None:
        """Take ``h`` off the deletion queue (no statement unless it is queued)."""
        if h in self._queued:
            self.db.execute("DELETE FROM block_gc WHERE hash = ?", (h,))
            self._queued.discard(h)

    def collect(self, now: float, limit: int = 256) -> list[str]:
        """Delete up to ``limit`` queued blocks whose delay has passed and that are still
        unreferenced; returns them. Call it on the event loop that calls ``write`` (not in a
        thread), again while it returns ``limit`` of them."""
        due = [
            h
            for (h,) in self.db.execute(
                "SELECT hash FROM block_gc WHERE due <= ? LIMIT ?", (now, limit)
            )
        ]
        gone = []
        for h in due:
            self.db.execute("DELETE FROM block_gc WHERE hash = ?", (h,))
            self._queued.discard(h)
            if self.refcount(h) == 0:
                self.forget(h)
                self.path(h).unlink(missing_ok=True)
                gone.append(h)
        return gone
