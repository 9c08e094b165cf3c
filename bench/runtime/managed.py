"""Child process of ``bench.runtime``: lifecycle latency and a 50-container burst, measured in
a process that does nothing but manage containers (so its RSS is the runtime's own).

Usage: ``python -m bench.runtime.managed <containerd socket> <image ref> <data dir>``; prints
one JSON line. The image must be in a plain-HTTP registry on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import psutil

from bench.common import percentile
from cloudless.runtime import ContainerSpec, ContainerState
from cloudless.runtime.containerd import ContainerdRuntime
from cloudless.runtime.oci.distribution import RegistryConfig, RegistryHost

LATENCY_N = int(os.environ.get("BENCH_RUNTIME_LATENCY_N", "30"))
BURST = 50
SLEEPER = ("sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 1000 & wait")


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / (1 << 20)


async def ctr_run(address: str, image: str, cid: str) -> float:
    """``ctr run -d`` of the same sleeper (containerd's own path plus ctr's process start), in
    ms; the container is removed afterwards."""
    base = ["ctr", "-a", address, "-n", "bench-ctr"]

    async def ctr(*args: str) -> None:
        p = await asyncio.create_subprocess_exec(
            *base, *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await p.wait()

    t = time.perf_counter()
    await ctr("run", "-d", image, cid, *SLEEPER)
    dt = (time.perf_counter() - t) * 1000
    await ctr("tasks", "kill", "-s", "SIGKILL", cid)
    await asyncio.sleep(0.05)
    await ctr("tasks", "rm", "-f", cid)
    await ctr("containers", "rm", cid)
    return dt


async def bench_lifecycle(rt: ContainerdRuntime, image: str, address: str) -> dict[str, Any]:
    """Ours and ``ctr run -d`` alternate sample by sample, so both see the same machine load."""
    start_ms: list[float] = []
    stop_ms: list[float] = []
    ctr_ms: list[float] = []
    for i in range(LATENCY_N):
        ctr_ms.append(await ctr_run(address, image, f"ctr-{i}"))
        cid = f"lat-{i}"
        t = time.perf_counter()
        await rt.create_container(ContainerSpec(id=cid, image=image, command=SLEEPER))
        st = await rt.start_container(cid)
        start_ms.append((time.perf_counter() - t) * 1000)
        assert st.state is ContainerState.RUNNING
        async for line in rt.container_logs(cid, follow=True):  # its SIGTERM trap is set
            if line.text == "ready":
                break
        t = time.perf_counter()
        st = await rt.stop_container(cid, timeout=10)
        stop_ms.append((time.perf_counter() - t) * 1000)
        assert st.state is ContainerState.EXITED and st.exit_code == 0, st
        await rt.delete_container(cid)
    return {
        "n": LATENCY_N,
        "create_to_running_ms": {
            "p50": percentile(start_ms, 50),
            "p95": percentile(start_ms, 95),
            "target_p50": 100,
            "ok": percentile(start_ms, 50) <= 100,
            "ctr_run_d_ms": {"p50": percentile(ctr_ms, 50), "p95": percentile(ctr_ms, 95)},
        },
        "stop_ms": {
            "p50": percentile(stop_ms, 50),
            "p95": percentile(stop_ms, 95),
            "target_p50": 100,
            "ok": percentile(stop_ms, 50) <= 100,
        },
    }


async def bench_burst(rt: ContainerdRuntime, image: str) -> dict[str, Any]:
    peak = rss_mb()
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb())
            await asyncio.sleep(0.05)

    async def one(i: int) -> None:
        cid = f"burst-{i}"
        await rt.create_container(ContainerSpec(id=cid, image=image, command=SLEEPER))
        await rt.start_container(cid)

    sampler = asyncio.create_task(sample())
    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(BURST)))
    running = [s for s in await rt.list_containers() if s.state is ContainerState.RUNNING]
    elapsed = time.perf_counter() - t
    stop.set()
    await sampler
    await asyncio.gather(*(rt.delete_container(f"burst-{i}") for i in range(BURST)))
    return {
        "containers": BURST,
        "all_running_s": elapsed,
        "running": len(running),
        "target_s": 10,
        "peak_rss_mb": peak,
        "target_rss_mb": 100,
        "ok": len(running) == BURST and elapsed <= 10 and peak < 100,
    }


async def main(address: str, image: str, data_dir: str) -> None:
    host = image.split("/", 1)[0]
    rt = ContainerdRuntime(
        address,
        data_dir=data_dir,
        namespace="bench",
        registry=RegistryConfig({host: RegistryHost(plain_http=True)}),
    )
    loop = asyncio.create_task(rt.run())
    try:
        await rt.pull_image(image)
        p = await asyncio.create_subprocess_exec(
            "ctr", "-a", address, "-n", "bench-ctr", "images", "pull", "--plain-http", image,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        await p.wait()
        lifecycle = await bench_lifecycle(rt, image, address)
        burst = await bench_burst(rt, image)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await rt.close()
    print(json.dumps({"lifecycle": lifecycle, "burst": burst}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
