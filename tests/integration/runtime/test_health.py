"""Health checks on real containerd: the agent's supervisor runs a busybox httpd with an HTTP
readiness check, a TCP check and an exec liveness check, and the test breaks each from inside
the container (through the same exec seam) and watches the replica's status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from cloudless.agent.supervisor import Assigned, LocalStatus, Supervisor
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import parse_workload
from tests.integration.runtime.conftest import Env

# The test image has busybox with a few applet links; the rest run as "/bin/busybox <applet>".
SCRIPT = (
    "/bin/busybox mkdir -p /www && echo ok > /www/index.html && : > /tmp/alive && "
    "exec httpd -f -p $PORT -h /www"
)
RM = "/bin/busybox", "rm"


async def until(what: str, ok: Callable[[], bool], within: float = 20.0) -> float:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not {what} within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_readiness_and_liveness_on_containerd(env: Env) -> None:
    rt = env.runtime()
    spec = parse_workload(
        {
            "name": "web",
            "image": env.image,
            "command": ["sh", "-c", SCRIPT],
            "ports": [8080],
            "restart": {"policy": "always", "backoff": 0.2},
            "stop_timeout": 2,
            "health": {
                "readiness": {
                    "http": {"port": 8080, "path": "/index.html"},
                    "interval": "300ms",
                    "failure_threshold": 1,
                },
                "liveness": {
                    "exec": "test -f /tmp/alive",  # sh -c (test is a shell builtin)
                    "interval": "300ms",
                    "failure_threshold": 2,
                },
            },
        }
    )
    seen: list[str] = []  # every reason reported, as the heartbeats would carry them
    sup = Supervisor(
        rt, SystemClock(), lambda: seen.extend(s.reason for s in sup.statuses() if s.reason)
    )
    task = asyncio.create_task(sup.run([Assigned("web-0", "web", 1, spec)]))
    try:
        await until("started", lambda: "web-0" in sup.workers)
        st: LocalStatus = sup.workers["web-0"].status
        took = await until("ready", lambda: st.ready)
        assert st.state is ReplicaState.RUNNING and took < 15

        # Readiness: the page goes away -> 404 -> not ready (still running, not restarted).
        await rt.exec_in_container("web-0", [*RM, "/www/index.html"])
        await until("not ready", lambda: not st.ready)
        assert "HTTP 404" in st.health and st.restarts == 0
        await rt.exec_in_container("web-0", ["sh", "-c", "echo ok > /www/index.html"])
        await until("ready again", lambda: st.ready)

        # Liveness: the file it tests goes away -> two failures -> stopped and recreated.
        pid = (await rt.get_container("web-0")).pid
        await rt.exec_in_container("web-0", [*RM, "/tmp/alive"])
        await until("restarted", lambda: st.restarts == 1 and st.ready)
        assert (await rt.get_container("web-0")).pid != pid
        assert "liveness exec sh -c test -f /tmp/alive failed 2 times in a row: exit 1" in seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await rt.delete_container("web-0")


async def test_tcp_check_on_containerd(env: Env) -> None:
    rt = env.runtime()
    spec = parse_workload(
        {
            "name": "tcp",
            "image": env.image,
            # listens only after 1 s: not ready before, ready after
            "command": ["sh", "-c", "sleep 1; exec httpd -f -p $PORT"],
            "ports": [9000],
            "health": {"readiness": {"tcp": 9000, "interval": "200ms"}},
        }
    )
    sup = Supervisor(rt, SystemClock(), lambda: None)
    task = asyncio.create_task(sup.run([Assigned("tcp-0", "tcp", 1, spec)]))
    try:
        await until("running", lambda: "tcp-0" in sup.workers)
        st = sup.workers["tcp-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        assert not st.ready
        await until("ready", lambda: st.ready)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await rt.delete_container("tcp-0")
