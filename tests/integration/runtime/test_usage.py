"""Live replica usage against real containerd: the agent's sampler turns two samples of
``stats_all`` (Tasks.Metrics for the whole namespace) into CPU, memory and disk rates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudless.agent.usage import UsageSampler
from cloudless.lib.clock import SystemClock
from cloudless.runtime import ContainerSpec
from tests.integration.runtime.conftest import Env

pytestmark = pytest.mark.integration

MiB = 1 << 20
# Fills 24 MiB of memory (tmpfs pages are anonymous memory, counted in the working set),
# writes 16 MiB to the rootfs with direct I/O (block I/O of the container's cgroup), then
# keeps one CPU busy.
BUSY = (
    "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; "
    "dd if=/dev/zero of=/blk bs=1M count=16 oflag=direct 2>/dev/null; "
    "while :; do :; done"
)


def kernel_block_writes(cgroup: str) -> int:
    """Bytes the kernel accounts as written by ``cgroup`` (v1 blkio or v2 io.stat)."""
    total = 0
    v1 = Path("/sys/fs/cgroup/blkio") / cgroup.lstrip("/")
    v2 = Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "io.stat"
    if v2.exists():
        for line in v2.read_text().splitlines():
            total += sum(int(f[7:]) for f in line.split() if f.startswith("wbytes="))
    else:
        for name in (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.io_service_bytes_recursive",
        ):
            f = v1 / name
            if f.exists():
                total += sum(
                    int(p[2]) for line in f.read_text().splitlines()
                    if len(p := line.split()) == 3 and p[1] == "Write"
                )  # fmt: skip
    return total


async def test_sampler_reports_cpu_memory_and_disk_of_real_containers(env: Env) -> None:
    rt = env.runtime()
    await rt.pull_image(env.image)
    await rt.create_container(
        ContainerSpec(id="busy", image=env.image, command=("sh", "-c", BUSY), memory_bytes=96 * MiB)
    )
    await rt.create_container(ContainerSpec(id="idle", image=env.image, command=("sleep", "3600")))
    sampler = UsageSampler(rt, SystemClock(), lambda: 1.0)
    await sampler.sample()  # before any starts: nothing runs
    assert sampler.latest == {}
    await rt.start_container("idle")
    await sampler.sample()  # idle only, and a first sample has no rates yet
    assert list(sampler.latest) == ["idle"] and sampler.latest["idle"].cpu_millis == 0
    await rt.start_container("busy")
    await sampler.sample()
    await asyncio.sleep(2.0)  # the dd writes are done well within this on the test machine
    await sampler.sample()
    busy, idle = sampler.latest["busy"], sampler.latest["idle"]
    # A busy loop on a shared 2-core machine: at least a tenth of a CPU, at most two.
    assert 100 <= busy.cpu_millis <= 2100, busy
    assert idle.cpu_millis < 50, idle
    assert busy.memory_bytes >= 24 * MiB and busy.memory_limit_bytes == 96 * MiB, busy
    assert idle.memory_limit_bytes == 0 and idle.memory_bytes < 8 * MiB, idle
    # 16 MiB written directly within the two seconds: at least 4 MiB/s over the window. On
    # cgroup v1 the kernel counts it only once blk-throttle is set up on the disk, which the
    # runtime does when it starts (``io_accounting``); v2 counts it anyway.
    assert kernel_block_writes(rt.cgroups_path("busy")) >= 16 * MiB
    assert busy.disk_write_bps >= 4 * MiB, busy
    assert busy.net_rx_bps == -1 and busy.net_tx_bps == -1  # the host's network, not its own
    await rt.stop_container("busy", timeout=1)
    await sampler.sample()
    assert list(sampler.latest) == ["idle"]
    for cid in ("busy", "idle"):
        await rt.delete_container(cid)
