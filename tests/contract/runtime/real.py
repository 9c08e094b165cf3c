"""The containerd side of the contract suite: a private containerd and registry per test."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
    remove_cgroups,
)
from cloudless.runtime import ContainerSpec
from cloudless.runtime.containerd import ContainerdRuntime
from tests.contract.runtime.harness import start_loop, stop_loop

T = TypeVar("T")

SLEEPER = "trap 'exit 0' TERM; echo ready; sleep 1000 & wait"
STUBBORN = "trap '' TERM; echo ready; sleep 1000 & wait; sleep 1000 & wait"


@dataclass
class ContainerdHarness:
    containerd: PrivateContainerd
    registry: PrivateRegistry
    data_dir: Path
    namespace: str
    image: str
    runtime: ContainerdRuntime = field(init=False)
    missing_image: str = ""
    unpulled_image: str = ""
    loop_task: Any = None

    def __post_init__(self) -> None:
        self.runtime = self.make_runtime()
        self.missing_image = self.registry.ref("nope", "1")

    def make_runtime(self) -> ContainerdRuntime:
        return ContainerdRuntime(
            self.containerd.address,
            data_dir=self.data_dir,
            namespace=self.namespace,
            registry=self.registry.registry_config(),
        )

    def _spec(self, cid: str, script: str, **kw: Any) -> ContainerSpec:
        return ContainerSpec(id=cid, image=self.image, command=("sh", "-c", script), **kw)

    def sleeper(self, cid: str, **kw: Any) -> ContainerSpec:
        return self._spec(cid, SLEEPER, **kw)

    def execer(self, cid: str) -> ContainerSpec:
        return self.sleeper(cid)

    async def ready(self, cid: str) -> None:
        # "ready" is printed once the shell's trap exists. Before it, a SIGTERM finds runc's
        # init (a Go program, PID 1 until it execs the shell: it then exits 2) or a shell
        # that, as PID 1 without a handler, ignores it.
        async with asyncio.timeout(10):
            async for line in self.runtime.container_logs(cid, follow=True):
                if line.text == "ready":
                    return

    def exiter(self, cid: str, code: int, stdout: list[str], stderr: list[str]) -> ContainerSpec:
        lines = [f"echo {x}" for x in stdout] + [f"echo {x} >&2" for x in stderr]
        return self._spec(cid, "; ".join([*lines, f"exit {code}"]))

    def stubborn(self, cid: str) -> ContainerSpec:
        return self._spec(cid, STUBBORN)

    def early_late(self, cid: str) -> ContainerSpec:
        return self._spec(cid, "echo early; echo early-err >&2; sleep 2.5; echo late; sleep 1000")

    async def mid_then_late(self, cid: str) -> float:
        await asyncio.sleep(1.5)
        mid = time.time()
        async with asyncio.timeout(10):
            async for line in self.runtime.container_logs(cid, follow=True, since=mid):
                if line.text == "late":
                    break
        return mid

    def memory_hog(self, cid: str) -> ContainerSpec:
        return self._spec(cid, "dd if=/dev/zero of=/dev/null bs=64M count=1", memory_bytes=16 << 20)

    def missing_command(self, cid: str) -> ContainerSpec:
        return ContainerSpec(id=cid, image=self.image, command=("no-such-cmd",))

    async def drive(self, aw: Awaitable[T], seconds: float) -> T:
        return await aw

    async def reopen(self) -> ContainerdRuntime:
        await stop_loop(self)
        self.runtime = self.make_runtime()
        start_loop(self)
        return self.runtime


async def containerd_harness() -> AsyncIterator[ContainerdHarness]:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    with tempfile.TemporaryDirectory(prefix="cl-rt-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        ns = f"ct-{secrets.token_hex(3)}"
        async with PrivateRegistry(root_dir=root / "reg") as reg:
            async with PrivateContainerd(root / "ctrd") as cd:
                image = await build_busybox_image(reg, "busybox", "1")
                other = await build_busybox_image(reg, "other", "1")
                h = ContainerdHarness(cd, reg, root / "agent", ns, image)
                h.unpulled_image = other
                start_loop(h)
                try:
                    yield h
                finally:
                    await stop_loop(h)
            remove_cgroups(f"/cloudless/{ns}")
