"""Reading a container's two log streams: history (with tail / resume) then follow.

Pure line-splitting lives in ``split_lines`` and ``tail_start``; ``read_logs`` drives any
``LogSource`` (files on disk for containerd, memory for the fake). A trailing partial line is
held back until its newline arrives, or emitted once the container has exited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cloudless.runtime.types import LogCursor, LogLine, LogStream

STREAMS = (LogStream.STDOUT, LogStream.STDERR)


class LogSource(Protocol):
    def size(self, stream: LogStream) -> int:
        """Current length of the stream in bytes (shrinks if the stream was capped)."""
        ...

    def read(self, stream: LogStream, offset: int, limit: int) -> bytes: ...

    async def finished(self) -> bool:
        """True once no more output can come (the container has exited)."""
        ...

    async def wait(self) -> None:
        """Return after new output may have arrived (poll interval or a notification)."""
        ...


def split_lines(data: bytes, start: int, final: bool) -> tuple[list[tuple[str, int]], int]:
    """Complete lines of ``data`` (read at offset ``start``) with the offset after each.

    Returns ``(lines, consumed_to)``. Without ``final`` an unterminated tail is left unread.
    Example: ``split_lines(b"a\\nbc", 10, False)`` -> ``([("a", 12)], 12)``.
    """
    lines: list[tuple[str, int]] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        lines.append((data[pos:nl].decode("utf-8", "replace"), start + nl + 1))
        pos = nl + 1
    if final and pos < len(data):
        lines.append((data[pos:].decode("utf-8", "replace"), start + len(data)))
        pos = len(data)
    return lines, start + pos


def tail_start(data: bytes, n: int) -> int:
    """Offset in ``data`` where its last ``n`` lines begin (a final partial line counts)."""
    if n <= 0:
        return len(data)
    end = len(data)
    if end and data.endswith(b"\n"):
        end -= 1
    pos = end
    for _ in range(n):
        nl = data.rfind(b"\n", 0, pos)
        if nl < 0:
            return 0
        pos = nl
    return pos + 1


_CHUNK = 1 << 20
_TAIL_WINDOW = 4 << 20


async def read_logs(
    src: LogSource,
    *,
    follow: bool,
    tail: int | None,
    since: LogCursor | None,
) -> AsyncIterator[LogLine]:
    cursor = since or LogCursor()
    if tail is not None and since is None:
        for s in STREAMS:
            size = src.size(s)
            lo = max(0, size - _TAIL_WINDOW)
            cursor = cursor.advanced(s, lo + tail_start(src.read(s, lo, size - lo), tail))
    # History: each stream in turn, up to what exists now.
    done = await src.finished()
    for s in STREAMS:
        cursor = _clamp(src, s, cursor)
        while True:
            data = src.read(s, cursor.get(s), _CHUNK)
            if not data:
                break
            lines, to = split_lines(data, cursor.get(s), final=done and len(data) < _CHUNK)
            for text, off in lines:
                cursor = cursor.advanced(s, off)
                yield LogLine(s, text, cursor)
            cursor = cursor.advanced(s, to)
            if len(data) < _CHUNK or not lines:
                break
    if not follow:
        return
    while True:
        done = await src.finished()
        progressed = False
        for s in STREAMS:
            cursor = _clamp(src, s, cursor)
            data = src.read(s, cursor.get(s), _CHUNK)
            if not data:
                continue
            lines, to = split_lines(data, cursor.get(s), final=done)
            for text, off in lines:
                cursor = cursor.advanced(s, off)
                yield LogLine(s, text, cursor)
            progressed = progressed or bool(lines)
            cursor = cursor.advanced(s, to)
        if done and not progressed:
            return
        if not progressed:
            await src.wait()


def _clamp(src: LogSource, s: LogStream, cursor: LogCursor) -> LogCursor:
    """A stream that was capped (truncated) restarts at 0 rather than waiting forever."""
    return cursor.advanced(s, 0) if cursor.get(s) > src.size(s) else cursor
