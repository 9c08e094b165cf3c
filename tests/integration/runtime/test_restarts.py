"""Restarts and cleanup against real containerd: containerd restarted under running containers,
an agent restart (recover), logs that outlive both, the log cap, and no orphaned tasks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.runtime import (
    ContainerExit,
    ContainerSpec,
    ContainerState,
    LogStream,
    RuntimeUnavailable,
)
from tests.integration.runtime.conftest import Env

pytestmark = pytest.mark.integration

SLEEPER = "trap 'exit 0' TERM; sleep 1000 & wait"


async def exit_of(
    exits: AsyncIterator[ContainerExit], cid: str, within: float = 15
) -> ContainerExit:
    async with asyncio.timeout(within):
        async for e in exits:
            if e.id == cid:
                return e
    raise AssertionError("exit stream ended")


def spec(cid: str, image: str, script: str) -> ContainerSpec:
    return ContainerSpec(id=cid, image=image, command=("sh", "-c", script), workload_id="w1")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_containerd_restart_keeps_containers_and_exits_still_arrive(env: Env) -> None:
    rt = env.runtime(reconcile_every=60)  # only the resubscribe can catch the missed exit
    assert (await rt.version()).startswith("1.")
    await rt.pull_image(env.image)
    exits = rt.exits()
    await rt.create_container(spec("long", env.image, SLEEPER))
    pid = (await rt.start_container("long")).pid
    await rt.create_container(spec("short", env.image, "sleep 1; exit 7"))
    await rt.start_container("short")
    # containerd is down while "short" exits: the exit must still be reported afterwards.
    await env.containerd.stop(cleanup=False)
    with pytest.raises(RuntimeUnavailable) as e:
        await rt.version(timeout=0.5)
    assert "containerd did not answer" in str(e.value)
    await asyncio.sleep(1.0)
    await env.containerd.start()
    e = await exit_of(exits, "short")
    assert (e.exit_code, e.oom_killed) == (7, False)
    st = await rt.get_container("long")
    assert (st.state, st.pid) == (ContainerState.RUNNING, pid)
    await rt.stop_container("long", timeout=5)
    assert (await exit_of(exits, "long")).exit_code == 0


async def test_agent_restart_adopts_without_orphans_or_duplicates(env: Env) -> None:
    rt = env.runtime()
    await rt.pull_image(env.image)
    await rt.create_container(spec("keep", env.image, f"echo before; {SLEEPER}"))
    pid = (await rt.start_container("keep")).pid
    await rt.create_container(spec("done", env.image, "exit 3"))
    await rt.start_container("done")
    await asyncio.sleep(0.5)
    await env.close_runtime(rt)  # the agent process "dies"

    rt2 = env.runtime()
    found = {s.id: s for s in await rt2.recover()}
    assert set(found) == {"keep", "done"}  # each once, none lost
    assert (found["keep"].state, found["keep"].pid) == (ContainerState.RUNNING, pid)
    assert found["keep"].workload_id == "w1" and found["keep"].image == env.image
    assert found["keep"].started_at is not None  # from /proc, the new runtime never saw it start
    assert (found["done"].state, found["done"].exit_code) == (ContainerState.EXITED, 3)
    assert "keep" in await env.ctr("tasks", "ls")  # cross-check with ctr
    lines = [x.text async for x in rt2.container_logs("keep")]
    assert lines == ["before"]
    exits = rt2.exits()
    await rt2.stop_container("keep", timeout=5)
    assert (await exit_of(exits, "keep")).exit_code == 0
    for cid in ("keep", "done"):
        await rt2.delete_container(cid)
    assert not alive(pid)
    assert await rt2.recover() == []
    out = await env.ctr("containers", "ls", "-q")
    assert out.strip() == ""
    assert "keep" not in await env.ctr("snapshots", "ls")


async def test_logs_follow_across_a_containerd_restart(env: Env) -> None:
    rt = env.runtime()
    await rt.pull_image(env.image)
    script = "echo one; sleep 2; echo two >&2; sleep 1; echo three"
    await rt.create_container(spec("talk", env.image, script))
    await rt.start_container("talk")
    got: list[str] = []

    async def follow() -> None:
        async for line in rt.container_logs("talk", follow=True):
            got.append(f"{line.stream.value}:{line.text}")

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    await env.containerd.restart()
    await asyncio.wait_for(task, 20)
    assert got == ["stdout:one", "stderr:two", "stdout:three"]


async def test_log_files_are_capped(env: Env) -> None:
    rt = env.runtime(log_max_bytes=64 * 1024, reconcile_every=0.2)
    await rt.pull_image(env.image)
    # 2000 lines of 100 bytes = 200_000 bytes, over the 65_536-byte cap.
    script = (
        "i=0; while [ $i -lt 2000 ]; do echo $(printf '%099d' $i); i=$((i+1)); done; " + SLEEPER
    )
    await rt.create_container(spec("noisy", env.image, script))
    await rt.start_container("noisy")
    path = rt.logs.path("noisy", LogStream.STDOUT)
    last = f"{1999:099d}"
    async with asyncio.timeout(20):
        while True:  # until the writer is done (its last line is there)
            if [x.text async for x in rt.container_logs("noisy", tail=1)] == [last]:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.6)  # a few housekeeping rounds
    assert path.stat().st_size <= 64 * 1024
    tail = [x.text async for x in rt.container_logs("noisy", tail=1)]
    assert tail == [f"{1999:099d}"]


async def test_delete_of_a_running_container_leaves_no_process(env: Env) -> None:
    rt = env.runtime()
    await rt.pull_image(env.image)
    await rt.create_container(spec("run", env.image, SLEEPER))
    pid = (await rt.start_container("run")).pid
    assert pid and alive(pid)
    await rt.delete_container("run")
    assert not alive(pid)
    assert (await env.ctr("tasks", "ls")).count("\n") <= 1  # header only


async def test_limits_land_in_the_cgroup(env: Env) -> None:
    rt = env.runtime()
    await rt.pull_image(env.image)
    c = ContainerSpec(
        id="limited",
        image=env.image,
        command=("sh", "-c", SLEEPER),
        cpu_millicores=250,
        memory_bytes=64 << 20,
    )
    await rt.create_container(c)
    await rt.start_container("limited")
    rel = rt.cgroups_path("limited").lstrip("/")
    v1 = Path("/sys/fs/cgroup/cpu") / rel
    if v1.is_dir():  # cgroup v1 (this machine); v2 would be /sys/fs/cgroup/<rel>/cpu.max
        # 250 millicores -> 25_000 us quota per 100_000 us period.
        assert (v1 / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (v1 / "cpu.cfs_period_us").read_text().strip() == "100000"
        mem = Path("/sys/fs/cgroup/memory") / rel / "memory.limit_in_bytes"
        assert int(mem.read_text()) == 64 << 20
    else:
        assert (Path("/sys/fs/cgroup") / rel / "cpu.max").read_text().split() == ["25000", "100000"]
    stats = await rt.container_stats("limited")
    assert stats.memory_limit_bytes == 64 << 20 and stats.pids >= 1
    await rt.delete_container("limited")
