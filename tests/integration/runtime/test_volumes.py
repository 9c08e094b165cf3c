"""Persistent volumes on real containerd: the agent's supervisor runs a replica that counts its
starts in a file on its volume; the count must survive a killed container (recreated by the
restart policy), a spec change (container replaced), an agent restart (adopted) and the
replica's removal (data kept on disk)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from cloudless.agent.supervisor import Assigned, Supervisor
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


@contextlib.asynccontextmanager
async def agent(
    rt: ContainerdRuntime, root: Path, initial: list[Assigned]
) -> AsyncIterator[Supervisor]:
    sup = Supervisor(rt, SystemClock(), lambda: None, volumes_root=root)
    task = asyncio.create_task(sup.run(initial))
    try:
        await until("worker", lambda: bool(sup.workers))
        yield sup
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_volume_survives_restart_recreate_update_and_agent_restart(env: Env) -> None:
    root = env.tmp / "agent" / "volumes"
    count = root / "db" / "db-0" / "data" / "count"

    def counted(n: int) -> Callable[[], bool]:
        return lambda: count.exists() and count.read_text().strip() == str(n)

    def v(n: int, value: str) -> Assigned:
        return Assigned("db-0", "db", n, replace(db(value), image=env.image))

    rt = env.runtime()
    async with agent(rt, root, [v(1, "a")]) as sup:
        st = sup.workers["db-0"].status
        await until("first start counted", counted(1))
        # the container may count before the supervisor has seen its start return
        await until("running", lambda: st.state is ReplicaState.RUNNING)
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
    async with agent(rt2, root, [v(2, "b")]) as sup2:
        st2 = sup2.workers["db-0"].status
        await until("adopted", lambda: st2.state is ReplicaState.RUNNING)
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
