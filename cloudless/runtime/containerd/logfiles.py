"""Container logs as two plain files per container, written by containerd's runc shim.

containerd 1.6's shim treats a ``file://`` stdout URI specially: it opens that one path for
*both* stdout and stderr (``pkg/process/io.go``), merging the streams. A bare absolute path
(no scheme) is taken as a FIFO path, but if it is a regular file the shim opens it with
``O_APPEND`` and copies the stream into it. So we pre-create ``stdout.log`` and ``stderr.log``
and hand over bare paths: the streams stay apart, and the files outlive agent and containerd
restarts (the shim holds the descriptors).

The size cap is copy-truncate: when a file passes ``max_bytes`` its tail half is kept (the
writer appends with ``O_APPEND``, so truncating under it is safe). Readers that were past the
new end restart from 0 (see ``logs._clamp``).

Raw files carry no timestamps, so for ``since=<time>`` the runtime keeps a small time index per
stream (``stdout.idx``: lines ``<unix time> <size>``), appending a checkpoint whenever a file
grew since the last tick (about once a second while the agent runs). ``offset_at(t)`` is the
size at the last checkpoint taken at or before ``t``: output from there on was written after
that checkpoint, so a time-based read may start up to one tick early, and earlier while the
agent was down (never late: nothing written after ``t`` is skipped).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cloudless.runtime.types import LogStream

#: An index line is ~20 bytes: 256 KiB holds ~3.6 hours of once-a-second checkpoints.
MAX_INDEX_BYTES = 256 << 10


class LogFiles:
    def __init__(self, root: Path, max_bytes: int = 16 << 20) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._sizes: dict[tuple[str, LogStream], int] = {}  # size at the last checkpoint

    def index_path(self, container_id: str, stream: LogStream) -> Path:
        return self.dir(container_id) / f"{stream.value}.idx"

    def checkpoint(self, container_id: str, now: float, *, force: bool = False) -> None:
        """Record each stream's size at ``now`` if it changed since the last checkpoint."""
        for s in (LogStream.STDOUT, LogStream.STDERR):
            try:
                size = self.path(container_id, s).stat().st_size
                if not force and self._sizes.get((container_id, s)) == size:
                    continue
                idx = self.index_path(container_id, s)
                with idx.open("a") as f:
                    f.write(f"{now:.3f} {size}\n")
                    grown = f.tell() > MAX_INDEX_BYTES
                if grown:  # forget the oldest half: old times then read from the start
                    lines = idx.read_text().splitlines(keepends=True)
                    idx.write_text("".join(lines[len(lines) // 2 :]))
                self._sizes[(container_id, s)] = size
            except OSError:
                continue

    def offset_at(self, container_id: str, stream: LogStream, when: float) -> int:
        """Where output written after ``when`` begins (see the module docstring)."""
        try:
            text = self.index_path(container_id, stream).read_text()
        except OSError:
            return 0
        return offset_for_time(parse_index(text), when)

    def dir(self, container_id: str) -> Path:
        return self.root / container_id

    def path(self, container_id: str, stream: LogStream) -> Path:
        return self.dir(container_id) / f"{stream.value}.log"

    def create(self, container_id: str) -> tuple[str, str]:
        """Pre-create both files; returns the stdio paths to give Tasks.Create."""
        d = self.dir(container_id)
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for s in (LogStream.STDOUT, LogStream.STDERR):
            p = self.path(container_id, s)
            p.touch(exist_ok=True)
            out.append(str(p))
        return out[0], out[1]

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)
        for s in (LogStream.STDOUT, LogStream.STDERR):
            self._sizes.pop((container_id, s), None)

    def enforce_cap(self) -> None:
        """Trim every log file above the cap to its last ``max_bytes // 2`` bytes."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            for s in (LogStream.STDOUT, LogStream.STDERR):
                p = d / f"{s.value}.log"
                try:
                    if p.stat().st_size > self.max_bytes:
                        removed = _keep_tail(p, self.max_bytes // 2)
                        idx = d / f"{s.value}.idx"
                        idx.write_text(
                            shift_index(idx.read_text() if idx.exists() else "", removed)
                        )
                        self._sizes.pop((d.name, s), None)
                except OSError:
                    continue


def parse_index(text: str) -> list[tuple[float, int]]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out.append((float(parts[0]), int(parts[1])))
            except ValueError:
                continue
    return out


def offset_for_time(index: list[tuple[float, int]], when: float) -> int:
    """Size at the last checkpoint at or before ``when`` (0 if none).

    Example: checkpoints (10.0, 6) and (12.0, 20): when=11 -> 6; when=9 -> 0; when=12 -> 20.
    """
    best = 0
    for ts, size in index:
        if ts <= when:
            best = size
    return best


def shift_index(text: str, removed: int) -> str:
    """The index after the first ``removed`` bytes of its stream were cut away."""
    return "".join(f"{ts:.3f} {max(0, size - removed)}\n" for ts, size in parse_index(text))


def _keep_tail(p: Path, keep: int) -> int:
    """Keep the last ``keep`` bytes of ``p``; returns how many bytes were cut from its head."""
    with p.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - keep)
        f.seek(start)
        tail = f.read()
        f.seek(0)
        f.write(tail)
        f.truncate(len(tail))
        return start


@dataclass
class FileLogSource:
    files: LogFiles
    container_id: str
    is_finished: Callable[[], Awaitable[bool]]
    sleep: Callable[[float], Awaitable[None]]
    poll: float = 0.2

    def size(self, stream: LogStream) -> int:
        try:
            return self.files.path(self.container_id, stream).stat().st_size
        except OSError:
            return 0

    def read(self, stream: LogStream, offset: int, limit: int) -> bytes:
        try:
            with self.files.path(self.container_id, stream).open("rb") as f:
                f.seek(offset)
                return f.read(limit)
        except OSError:
            return b""

    async def finished(self) -> bool:
        return await self.is_finished()

    async def wait(self) -> None:
        await self.sleep(self.poll)
