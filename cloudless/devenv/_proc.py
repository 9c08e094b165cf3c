"""Child-process helpers shared by the launchers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from cloudless.lib.waits import within


async def start(argv: list[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as f:
        return await asyncio.create_subprocess_exec(
            *argv, stdout=f, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await within(grace, proc.wait())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def log_tail(log: Path, n: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def pids_with_arg(value: str) -> list[int]:
    """Processes whose command line contains the exact argument ``value``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if value.encode() in args:
            out.append(int(d.name))
    return out


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(d.name))
    return out


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
