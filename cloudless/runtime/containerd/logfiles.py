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
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cloudless.runtime.types import LogStream


class LogFiles:
    def __init__(self, root: Path, max_bytes: int = 16 << 20) -> None:
        self.root = root
        self.max_bytes = max_bytes

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

    def enforce_cap(self) -> None:
        """Trim every log file above the cap to its last ``max_bytes // 2`` bytes."""
        if not self.root.is_dir():
            return
        for d in self.root.iterdir():
            for s in (LogStream.STDOUT, LogStream.STDERR):
                p = d / f"{s.value}.log"
                try:
                    if p.stat().st_size > self.max_bytes:
                        _keep_tail(p, self.max_bytes // 2)
                except OSError:
                    continue


def _keep_tail(p: Path, keep: int) -> None:
    with p.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - keep))
        tail = f.read()
        f.seek(0)
        f.write(tail)
        f.truncate(len(tail))


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
