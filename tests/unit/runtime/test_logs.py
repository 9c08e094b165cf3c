"""Log reading: line splitting, tail, resume by cursor, follow until exit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from cloudless.runtime.containerd.logfiles import LogFiles, _keep_tail
from cloudless.runtime.logs import read_logs, split_lines, tail_start
from cloudless.runtime.types import LogCursor, LogStream

OUT, ERR = LogStream.STDOUT, LogStream.STDERR


@pytest.mark.parametrize(
    ("data", "start", "final", "lines", "to"),
    [
        (b"a\nbc", 10, False, [("a", 12)], 12),  # partial "bc" held back
        (b"a\nbc", 10, True, [("a", 12), ("bc", 14)], 14),  # ...unless the writer is done
        (b"", 0, True, [], 0),
        (b"\n\n", 0, False, [("", 1), ("", 2)], 2),
    ],
)
def test_split_lines(
    data: bytes, start: int, final: bool, lines: list[tuple[str, int]], to: int
) -> None:
    assert split_lines(data, start, final) == (lines, to)


@pytest.mark.parametrize(
    ("data", "n", "start"),
    [
        (b"a\nb\nc\n", 1, 4),  # "c\n" begins at 4
        (b"a\nb\nc\n", 2, 2),
        (b"a\nb\nc\n", 5, 0),
        (b"a\nb\nc", 1, 4),  # a final partial line counts as a line
        (b"a\n", 0, 2),
    ],
)
def test_tail_start(data: bytes, n: int, start: int) -> None:
    assert tail_start(data, n) == start


@dataclass
class MemSource:
    data: dict[LogStream, bytearray] = field(
        default_factory=lambda: {OUT: bytearray(), ERR: bytearray()}
    )
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def size(self, stream: LogStream) -> int:
        return len(self.data[stream])

    def read(self, stream: LogStream, offset: int, limit: int) -> bytes:
        return bytes(self.data[stream][offset : offset + limit])

    async def finished(self) -> bool:
        return self.done

    async def wait(self) -> None:
        self.changed.clear()
        await self.changed.wait()


async def test_follow_yields_new_lines_and_ends_at_exit() -> None:
    src = MemSource()
    src.data[OUT] += b"one\n"
    got: list[str] = []

    async def reader() -> None:
        async for line in read_logs(src, follow=True, tail=None, since=None):
            got.append(f"{line.stream.value}:{line.text}")

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.01)
    src.data[ERR] += b"oops\n"
    src.data[OUT] += b"tw"
    src.changed.set()
    await asyncio.sleep(0.01)
    assert got == ["stdout:one", "stderr:oops"]  # "tw" has no newline yet
    src.data[OUT] += b"o"
    src.done = True
    src.changed.set()
    await asyncio.wait_for(task, 1)
    assert got == ["stdout:one", "stderr:oops", "stdout:two"]


async def test_resume_after_a_cap_restarts_from_zero() -> None:
    src = MemSource(done=True)
    src.data[OUT] += b"new\n"
    # The cursor points past the (truncated) end: read from 0 instead of waiting forever.
    lines = [x.text async for x in read_logs(src, follow=False, tail=None, since=LogCursor(99))]
    assert lines == ["new"]


def test_cap_keeps_the_tail(tmp_path: pytest.TempPathFactory) -> None:
    files = LogFiles(tmp_path, max_bytes=100)  # type: ignore[arg-type]
    out, _ = files.create("c1")
    with open(out, "ab") as f:
        f.write(b"x" * 150 + b"END\n")
    files.enforce_cap()
    data = open(out, "rb").read()
    # 154 bytes > cap 100: keep the last 100 // 2 = 50 bytes.
    assert len(data) == 50 and data.endswith(b"END\n")
    _keep_tail(files.path("c1", OUT), 10)
    assert open(out, "rb").read() == b"xxxxxxEND\n"


@pytest.mark.parametrize(
    ("when", "offset"),
    [(9.0, 0), (10.0, 6), (11.5, 6), (12.0, 20), (99.0, 20)],
)
def test_offset_for_time(when: float, offset: int) -> None:
    from cloudless.runtime.containerd.logfiles import offset_for_time

    # Checkpoints: 6 bytes written by t=10, 20 by t=12.
    assert offset_for_time([(10.0, 6), (12.0, 20)], when) == offset


def test_time_index_survives_the_cap(tmp_path: pytest.TempPathFactory) -> None:
    from cloudless.runtime.containerd.logfiles import shift_index

    files = LogFiles(tmp_path, max_bytes=100)  # type: ignore[arg-type]
    out, _ = files.create("c1")
    files.checkpoint("c1", 1.0, force=True)  # 0 bytes at t=1
    with open(out, "ab") as f:
        f.write(b"a" * 60 + b"\n")
    files.checkpoint("c1", 2.0)  # 61 bytes at t=2
    files.checkpoint("c1", 2.5)  # unchanged: no new entry
    with open(out, "ab") as f:
        f.write(b"b" * 60 + b"\n")
    files.checkpoint("c1", 3.0)  # 122 bytes at t=3
    assert files.offset_at("c1", OUT, 2.7) == 61
    files.enforce_cap()  # 122 > 100: keep the last 50, so 72 bytes are cut from the head
    assert files.offset_at("c1", OUT, 2.7) == 0  # 61 - 72 < 0 -> from the start
    assert files.offset_at("c1", OUT, 3.0) == 50  # 122 - 72
    assert shift_index("1.000 10\n2.000 30\n", 15) == "1.000 0\n2.000 15\n"
