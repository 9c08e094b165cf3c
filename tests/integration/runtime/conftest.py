"""Real containerd + docker-registry per test (private sockets, ports and dirs)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
    remove_cgroups,
)
from cloudless.runtime.containerd import ContainerdRuntime
from cloudless.runtime.oci.distribution import RegistryConfig

pytestmark = pytest.mark.integration


@dataclass
class Env:
    tmp: Path
    containerd: PrivateContainerd
    registry: PrivateRegistry
    image: str
    namespace: str = field(default_factory=lambda: f"it-{secrets.token_hex(3)}")
    runtimes: list[tuple[ContainerdRuntime, asyncio.Task[None]]] = field(default_factory=list)

    def runtime(self, registry: RegistryConfig | None = None, **kw: Any) -> ContainerdRuntime:
        """A runtime with its ``run()`` loop going; closed at teardown."""
        rt = ContainerdRuntime(
            self.containerd.address,
            data_dir=self.tmp / "agent",
            namespace=self.namespace,
            registry=registry or self.registry.registry_config(),
            **kw,
        )
        self.runtimes.append((rt, asyncio.create_task(rt.run())))
        return rt

    async def close_runtime(self, rt: ContainerdRuntime) -> None:
        for r, task in list(self.runtimes):
            if r is rt:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await r.close()
                self.runtimes.remove((r, task))

    async def ctr(self, *args: str) -> str:
        p = await asyncio.create_subprocess_exec(
            "ctr", "-a", self.containerd.address, "-n", self.namespace, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await p.communicate()
        return out.decode()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    async with PrivateRegistry(root_dir=tmp_path / "reg") as reg:
        async with PrivateContainerd(tmp_path / "ctrd") as cd:
            image = await build_busybox_image(reg, "busybox", "1")
            e = Env(tmp_path, cd, reg, image)
            try:
                yield e
            finally:
                for rt, _ in list(e.runtimes):
                    await e.close_runtime(rt)
        remove_cgroups(f"/cloudless/{e.namespace}")
