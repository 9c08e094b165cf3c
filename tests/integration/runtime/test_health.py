"""Health checks on real containerd: the agent's supervisor runs a busybox httpd with an HTTP
readiness check, a TCP check and an exec liveness check, and the test breaks each from inside
the container (through the same exec seam) and watches the replica's status."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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


async def test_a_cancelled_exec_is_killed_and_deleted_without_a_stray_error(env: Env) -> None:
    """A probe cancelled while its command runs (the replica stops, the agent shuts down),
    even cancelled twice: the exec process is killed and deleted (containerd refuses to
    delete a running one), and nothing is left as an unretrieved task exception."""
    rt = env.runtime()
    spec = parse_workload({"name": "x", "image": env.image, "command": ["sleep", "300"]})
    sup = Supervisor(rt, SystemClock(), lambda: None)
    task = asyncio.create_task(sup.run([Assigned("x-0", "x", 1, spec)]))
    loop = asyncio.get_running_loop()
    stray: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, ctx: stray.append(ctx))
    try:
        await until("started", lambda: "x-0" in sup.workers)
        st = sup.workers["x-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        before = await env.ctr("task", "ps", "x-0")
        probe = asyncio.create_task(rt.exec_in_container("x-0", ["sleep", "123"], timeout=60))
        for _ in range(100):
            if (await env.ctr("task", "ps", "x-0")).count("\n") > before.count("\n"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the exec never showed in the container's processes")
        probe.cancel()
        await asyncio.sleep(0)
        probe.cancel()  # a second cancel leaves the clean-up on its own
        with contextlib.suppress(asyncio.CancelledError):
            await probe
        for _ in range(100):
            if (await env.ctr("task", "ps", "x-0")).count("\n") == before.count("\n"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the exec process outlived its cancellation")
        await asyncio.sleep(0.5)
        gc.collect()
        await asyncio.sleep(0)
        assert stray == []
    finally:
        loop.set_exception_handler(None)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await rt.delete_container("x-0")


async def test_exec_output_is_never_lost(env: Env) -> None:
    """Every exec's stdout and stderr come back, run after run (with one file for both,
    containerd 1.6's shim lost the output of about one exec in 30)."""
    rt = env.runtime()
    spec = parse_workload({"name": "o", "image": env.image, "command": ["sleep", "300"]})
    sup = Supervisor(rt, SystemClock(), lambda: None)
    task = asyncio.create_task(sup.run([Assigned("o-0", "o", 1, spec)]))
    try:
        await until("started", lambda: "o-0" in sup.workers)
        st = sup.workers["o-0"].status
        await until("running", lambda: st.state is ReplicaState.RUNNING)
        lost = []
        for i in range(60):
            r = await rt.exec_in_container("o-0", ["sh", "-c", f"echo out{i}; echo err{i} >&2"])
            if (r.exit_code, r.output) != (0, f"out{i}\nerr{i}\n"):
                lost.append((i, r))
        assert lost == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await rt.delete_container("o-0")
