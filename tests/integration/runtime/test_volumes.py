"""Persistent volumes on real containerd: the agent's supervisor runs a replica that counts its
starts in a file on its volume; the count must survive a killed container (recreated by the
restart policy), a spec change (container replaced), an agent restart (adopted) and the
replica's removal (data kept on disk), both as a plain directory and as a loop-mounted ext4
image (quota enforced). With an image, a write past the size hint fails inside the container,
and deleting the volume unmounts it and frees its loop device."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.agent.volume_quota import (
    ImageVolumes,
    PlainVolumes,
    VolumeStore,
    image_of,
    image_support,
    mounts_under,
)
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import WorkloadSpec, parse_workload
from cloudless.runtime.containerd import ContainerdRuntime
from tests.integration.runtime.conftest import Env

COUNTER = (
    "trap 'exit 0' TERM; c=$(cat /data/count 2>/dev/null || echo 0); "
    "echo $((c + 1)) > /data/count; sleep 1000 & wait"
)


async def until(what: str, ok: Callable[[], bool], within: float = 20.0) -> None:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not {what} within {within} s")
        await asyncio.sleep(0.05)


def db(env_value: str) -> WorkloadSpec:
    return parse_workload(
        {
            "name": "db",
            "image": "placeholder",
            "command": ["sh", "-c", COUNTER],
            "env": {"V": env_value},
            "restart": {"policy": "always", "backoff": 0.2},
            "stop_timeout": 2,
            "volumes": [
                {"name": "data", "mount_path": "/data", "size": "16Mi"},
                {"name": "seed", "mount_path": "/seed", "read_only": True},
            ],
        }
    )


NO_IMAGES = image_support()
needs_images = pytest.mark.skipif(NO_IMAGES is not None, reason=f"no volume images: {NO_IMAGES}")


def make_store(kind: str) -> VolumeStore:
    return ImageVolumes() if kind == "image" else PlainVolumes()


@contextlib.asynccontextmanager
async def agent(
    rt: ContainerdRuntime, root: Path, initial: list[Assigned], kind: str = "plain"
) -> AsyncIterator[Supervisor]:
    """A supervisor as an agent process runs it (a new store object each time, as a restarted
    agent process has)."""
    sup = Supervisor(
        rt, SystemClock(), lambda: None, volumes_root=root, volume_store=make_store(kind)
    )
    task = asyncio.create_task(sup.run(initial))
    try:
        await until("worker", lambda: bool(sup.workers))
        yield sup
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("kind", ["plain", pytest.param("image", marks=needs_images)])
async def test_volume_survives_restart_recreate_update_and_agent_restart(
    env: Env, kind: str
) -> None:
    root = env.tmp / "agent" / "volumes"
    count = root / "db" / "db-0" / "data" / "count"

    def counted(n: int) -> Callable[[], bool]:
        return lambda: count.exists() and count.read_text().strip() == str(n)

    def v(n: int, value: str) -> Assigned:
        return Assigned("db-0", "db", n, replace(db(value), image=env.image))

    rt = env.runtime()
    async with agent(rt, root, [v(1, "a")], kind) as sup:
        st = sup.workers["db-0"].status
        await until("first start counted", counted(1))
        # the container may count before the supervisor has seen its start return
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        assert st.volume_quota["data"] == (
            "image" if kind == "image" else "report: quotas are off on this agent"
        )
        assert st.volume_quota["seed"] == "report: no size hint"
        # Read-only volume: writing to it fails inside the container.
        r = await rt.exec_in_container("db-0", ["sh", "-c", "echo x > /seed/f"])
        assert r.exit_code != 0 and "Read-only" in r.output

        # 1. the container is killed from outside: the restart policy recreates it
        pid = (await rt.get_container("db-0")).pid
        assert pid
        os.kill(pid, signal.SIGKILL)
        await until("recreated", lambda: st.restarts == 1 and st.state is ReplicaState.RUNNING)
        await until("second start counted", counted(2))

        # 2. a spec change (new version) replaces the container in place
        sup.assign([v(2, "b")])
        await until("replaced", counted(3))
    await env.close_runtime(rt)

    # 3. the agent restarts: the running container is adopted, the data is the same
    rt2 = env.runtime()
    async with agent(rt2, root, [v(2, "b")], kind) as sup2:
        st2 = sup2.workers["db-0"].status
        await until("adopted", lambda: st2.state is ReplicaState.RUNNING)
        await until("quota mode known", lambda: bool(st2.volume_quota))
        assert st2.volume_quota == st.volume_quota  # the adopted replica's mounts, as they were
        assert count.read_text().strip() == "3"  # adopted, not restarted
        pid = (await rt2.get_container("db-0")).pid
        assert pid
        os.kill(pid, signal.SIGKILL)
        await until("fourth start counted", counted(4))

        # 4. the replica is removed from the node: container gone, data kept
        sup2.assign([])
        await sup2.idle()
        assert "db-0" not in [c.id for c in await rt2.list_containers()]
    assert count.read_text().strip() == "4"

    if kind == "image":  # one mount, never a second one for the same image
        assert mounts_under(root) == [root / "db" / "db-0" / "data"]


def loop_devices() -> str:
    import subprocess

    return subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout


@needs_images
async def test_a_write_past_the_hint_fails_in_the_container_and_delete_frees_the_image(
    env: Env,
) -> None:
    root = env.tmp / "agent" / "volumes"
    spec = parse_workload(
        {
            "name": "db",
            "image": env.image,
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            "stop_timeout": 2,
            "volumes": [{"name": "data", "mount_path": "/data", "size": "8Mi"}],
        }
    )
    data = root / "db" / "db-0" / "data"
    rt = env.runtime()
    async with agent(rt, root, [Assigned("db-0", "db", 1, spec)], "image") as sup:
        st = sup.workers["db-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        assert st.volume_quota == {"data": "image"}
        # 16 MiB into an 8 MiB volume: dd stops at ENOSPC, having written less than 8 MiB
        r = await rt.exec_in_container(
            "db-0", ["dd", "if=/dev/zero", "of=/data/big", "bs=1048576", "count=16"]
        )
        assert r.exit_code != 0 and "No space left on device" in r.output, r.output
        written = (data / "big").stat().st_size  # the agent sees the same file system
        assert 5 << 20 <= written < 8 << 20, written
        # the rest of the host's disk is untouched: a small file still fits once freed
        r = await rt.exec_in_container("db-0", ["sh", "-c", "rm /data/big && echo ok > /data/f"])
        assert r.exit_code == 0, r.output
        assert str(image_of(data)) in loop_devices()

        # delete --volumes: the container goes, then the mount, its loop device and the image
        sup.assign([Assigned("db-0", "db", 1, spec, running=False, drop_volumes=True)])
        await until("volume deleted", lambda: not (root / "db").exists())
        assert mounts_under(root) == []
        # the kernel clears an auto-clear loop device asynchronously
        await until("loop device released", lambda: str(image_of(data)) not in loop_devices())
