"""What the runtime contract suite needs from an implementation under test.

A harness turns an intent ("a container that prints this and exits 3", "one that ignores
SIGTERM") into a ``ContainerSpec`` that makes the implementation behave that way: the fake
through ``FakeBehavior`` knobs, containerd through a busybox shell command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cloudless.lib.clock import FakeClock
from cloudless.runtime import (
    ContainerRuntime,
    ContainerSpec,
    FakeBehavior,
    FakeExec,
    FakeHost,
    FakeRuntime,
    LogStream,
)

T = TypeVar("T")


class Harness(Protocol):
    runtime: ContainerRuntime
    image: str  # pullable
    missing_image: str  # the registry does not have it
    unpulled_image: str  # exists in the registry, never pulled

    def sleeper(self, cid: str, **kw: Any) -> ContainerSpec:
        """Runs until stopped; exits 0 on SIGTERM (once ``ready``)."""
        ...

    async def ready(self, cid: str) -> None:
        """Wait until a started sleeper or stubborn container has installed its SIGTERM
        handler (or its ignoring of SIGTERM)."""
        ...

    def exiter(self, cid: str, code: int, stdout: list[str], stderr: list[str]) -> ContainerSpec:
        """Prints the lines, then exits with ``code`` at once."""
        ...

    def stubborn(self, cid: str) -> ContainerSpec:
        """Ignores SIGTERM."""
        ...

    def early_late(self, cid: str) -> ContainerSpec:
        """Prints "early" (stdout) and "early-err" (stderr) at once, "late" ~2.5 s later."""
        ...

    async def mid_then_late(self, cid: str) -> float:
        """Let 1.5 s pass, note the wall time ("mid"), then wait until "late" is written."""
        ...

    def memory_hog(self, cid: str) -> ContainerSpec:
        """Exceeds its memory limit at once."""
        ...

    def missing_command(self, cid: str) -> ContainerSpec: ...

    def execer(self, cid: str) -> ContainerSpec:
        """A sleeper in which ``sh -c "echo out; exit 3"`` exits 3 printing "out", ``sleep 5``
        takes 5 s and ``no-such-cmd`` is not in the image."""
        ...

    async def drive(self, aw: Awaitable[T], seconds: float) -> T:
        """Await ``aw`` while letting ``seconds`` of (fake or real) time pass."""
        ...

    async def reopen(self) -> ContainerRuntime:
        """A new runtime object on the same machine (an agent restart)."""
        ...


@dataclass
class FakeHarness:
    clock: FakeClock
    runtime: FakeRuntime
    host: FakeHost
    image: str = "registry.test/busybox:1"
    missing_image: str = "registry.test/nope:1"
    unpulled_image: str = "registry.test/other:1"
    loop_task: asyncio.Task[None] | None = None

    @classmethod
    def make(cls) -> FakeHarness:
        clock = FakeClock()
        host = FakeHost(images={cls.image, cls.unpulled_image})
        return cls(clock, FakeRuntime(clock, host=host), host)

    def _spec(self, cid: str, b: FakeBehavior, **kw: Any) -> ContainerSpec:
        self.runtime.by_container[cid] = b
        return ContainerSpec(id=cid, image=self.image, **kw)

    def sleeper(self, cid: str, **kw: Any) -> ContainerSpec:
        return self._spec(cid, FakeBehavior(sigterm_exit_code=0), **kw)

    async def ready(self, cid: str) -> None:
        return None

    def exiter(self, cid: str, code: int, stdout: list[str], stderr: list[str]) -> ContainerSpec:
        out = "".join(f"{x}\n" for x in stdout).encode()
        err = "".join(f"{x}\n" for x in stderr).encode()
        return self._spec(cid, FakeBehavior(run_for=0.0, exit_code=code, stdout=out, stderr=err))

    def stubborn(self, cid: str) -> ContainerSpec:
        return self._spec(cid, FakeBehavior(ignore_sigterm=True))

    def early_late(self, cid: str) -> ContainerSpec:
        return self._spec(cid, FakeBehavior(stdout=b"early\n", stderr=b"early-err\n"))

    async def mid_then_late(self, cid: str) -> float:
        await self.clock.run_for(1.5)
        mid = self.clock.now()
        await self.clock.run_for(1.0)
        self.runtime.write_log(cid, LogStream.STDOUT, b"late\n")
        return mid

    def memory_hog(self, cid: str) -> ContainerSpec:
        return self._spec(cid, FakeBehavior(oom_after=0.0), memory_bytes=16 << 20)

    def missing_command(self, cid: str) -> ContainerSpec:
        b = FakeBehavior(start_error='command "no-such-cmd" not found in the image')
        return self._spec(cid, b, command=("no-such-cmd",))

    def execer(self, cid: str) -> ContainerSpec:
        def run(argv: tuple[str, ...]) -> FakeExec:
            if argv == ("sh", "-c", "echo out; exit 3"):
                return FakeExec(3, "out\n")
            if argv == ("sleep", "5"):
                return FakeExec(0, "", duration=5.0)
            if argv[0] == "no-such-cmd":
                return FakeExec(127, 'exec: "no-such-cmd": executable file not found in $PATH')
            return FakeExec()

        return self._spec(cid, FakeBehavior(sigterm_exit_code=0, exec=run))

    async def drive(self, aw: Awaitable[T], seconds: float) -> T:
        task = asyncio.ensure_future(aw)
        await asyncio.sleep(0)
        await self.clock.run_for(seconds, step=min(0.1, seconds) or 0.1)
        return await task

    async def reopen(self) -> ContainerRuntime:
        await stop_loop(self)
        rt = FakeRuntime(self.clock, host=self.host, by_container=self.runtime.by_container)
        self.runtime = rt
        start_loop(self)
        return rt


def start_loop(h: Any) -> None:
    """Run the runtime's long-lived loop for the test (the agent would use a TaskGroup)."""
    h.loop_task = asyncio.create_task(h.runtime.run())


async def stop_loop(h: Any) -> None:
    task = h.loop_task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        h.loop_task = None
    await h.runtime.close()
