"""A replica's restart count outlives the agent on real containerd: each restart makes a new
container labelled with the count so far, and a restarted agent adopts the running container
and counts on from there (``top``/``get replicas`` show the agent's count)."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

from cloudless.agent.supervisor import RESTARTS_LABEL, Assigned
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import parse_workload
from tests.integration.runtime.conftest import Env
from tests.integration.runtime.test_volumes import agent, until


async def test_restart_count_survives_an_agent_restart(env: Env) -> None:
    spec = parse_workload(
        {
            "name": "web",
            "image": "placeholder",
            "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
            "restart": {"policy": "always", "backoff": 0.2},
            "stop_timeout": 2,
        }
    )
    a = Assigned("web-1", "web", 1, replace(spec, image=env.image))
    root = env.tmp / "agent" / "volumes"

    async def kill(rt_pid: int | None) -> None:
        assert rt_pid
        os.kill(rt_pid, signal.SIGKILL)

    rt = env.runtime()
    async with agent(rt, root, [a]) as sup:
        st = sup.workers["web-1"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        await kill((await rt.get_container("web-1")).pid)
        await until("restart 1", lambda: st.restarts == 1 and st.state is ReplicaState.RUNNING)
        await kill((await rt.get_container("web-1")).pid)
        await until("restart 2", lambda: st.restarts == 2 and st.state is ReplicaState.RUNNING)
        labels = (await rt.get_container("web-1")).labels
        assert labels[RESTARTS_LABEL] == "2"
    await env.close_runtime(rt)

    rt2 = env.runtime()
    async with agent(rt2, root, [a]) as sup2:
        st2 = sup2.workers["web-1"].status
        await until("adopted", lambda: st2.state is ReplicaState.RUNNING)
        assert st2.restarts == 2  # not 0: counted on from the container's label
        await kill((await rt2.get_container("web-1")).pid)
        await until("restart 3", lambda: st2.restarts == 3 and st2.state is ReplicaState.RUNNING)
