"""Health checks in the supervisor, on the fake runtime and a fake clock (no coordinator at all:
the checks and the restarts they cause are the agent's own)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.lib.clock import FakeClock
from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import RestartMode, RestartPolicy, WorkloadSpec
from cloudless.runtime.fake import FakeBehavior, FakeExec, FakeRuntime


def exec_probe(cmd: str, **kw: float) -> Probe:
    return Probe(ProbeKind.EXEC, command=(cmd,), **kw)  # type: ignore[arg-type]


def assigned(health: HealthChecks, mode: RestartMode = RestartMode.ALWAYS) -> Assigned:
    spec = WorkloadSpec(
        name="db",
        image="img",
        restart=RestartPolicy(mode, backoff_base_s=1.0),
        stop_timeout_s=2,
        health=health,
    )
    return Assigned("db-0", "db", 1, spec)


@contextlib.asynccontextmanager
async def running(rt: FakeRuntime, clock: FakeClock) -> AsyncIterator[tuple[Supervisor, list[int]]]:
    changes: list[int] = []
    sup = Supervisor(rt, clock, lambda: changes.append(1))
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(rt.run())
        t2 = tg.create_task(sup.run())
        await settle(clock)
        try:
            yield sup, changes
        finally:
            t1.cancel()
            t2.cancel()


async def settle(clock: FakeClock, seconds: float = 0.0) -> None:
    for _ in range(30):
        await asyncio.sleep(0)
    if seconds:
        await clock.run_for(seconds, step=0.05)
    for _ in range(30):
        await asyncio.sleep(0)


def world(healthy: dict[str, bool]) -> FakeRuntime:
    """A runtime whose exec of ``alive``/``ready`` passes while ``healthy[cmd]`` is true."""

    def run(argv: tuple[str, ...]) -> FakeExec:
        return FakeExec(0) if healthy.get(argv[0], True) else FakeExec(1, "not yet\n")

    clock = FakeClock()
    return FakeRuntime(clock, default=FakeBehavior(sigterm_exit_code=0, exec=run))


async def test_ready_only_while_readiness_passes() -> None:
    healthy = {"ready": False}
    rt = world(healthy)
    clock = rt.clock
    assert isinstance(clock, FakeClock)
    readiness = exec_probe("ready", interval_s=1.0, failure_threshold=2)
    async with running(rt, clock) as (sup, _):
        sup.assign([assigned(HealthChecks(readiness=readiness))])
        await settle(clock, 0.5)
        st = sup.workers["db-0"].status
        assert st.state is ReplicaState.RUNNING and not st.ready
        await settle(clock, 1.0)  # second failure at t=1: unknown -> failing, with the reason
        assert not st.ready and st.health == "readiness exec ready: exit 1: not yet"
        healthy["ready"] = True
        await settle(clock, 1.0)  # probe at t=2 passes (success_threshold 1)
        assert st.ready and st.health == ""
        healthy["ready"] = False
        await settle(clock, 1.0)  # t=3: one failure of 2, still ready
        assert st.ready
        await settle(clock, 1.0)  # t=4: second failure in a row: not ready
        assert not st.ready
        assert st.state is ReplicaState.RUNNING and st.restarts == 0  # readiness never restarts


async def test_no_readiness_check_means_ready_while_running() -> None:
    rt = world({})
    clock = rt.clock
    assert isinstance(clock, FakeClock)
    async with running(rt, clock) as (sup, _):
        sup.assign([assigned(HealthChecks())])
        await settle(clock, 0.1)
        assert sup.workers["db-0"].status.ready


async def test_liveness_failure_restarts_under_the_policy() -> None:
    healthy = {"alive": True}
    rt = world(healthy)
    clock = rt.clock
    assert isinstance(clock, FakeClock)
    liveness = exec_probe("alive", interval_s=1.0, failure_threshold=3, start_grace_s=0.0)
    async with running(rt, clock) as (sup, _):
        sup.assign([assigned(HealthChecks(liveness=liveness))])
        await settle(clock, 2.5)  # probes at t=0,1,2 pass
        w = sup.workers["db-0"]
        assert w.status.state is ReplicaState.RUNNING and w.status.ready
        first_pid = (await rt.get_container("db-0")).pid
        healthy["alive"] = False
        await settle(clock, 2.0)  # t=3, t=4: two failures of 3
        assert w.status.state is ReplicaState.RUNNING
        await settle(clock, 1.0)  # t=5: third failure: SIGTERM (exits 0), counted as failure
        assert w.status.state is ReplicaState.FAILED
        assert w.status.reason.startswith("liveness exec alive failed 3 times in a row: exit 1")
        assert w.status.exit_code == 1  # exited 0 on SIGTERM, but a liveness stop is a failure
        healthy["alive"] = True
        await settle(clock, 1.5)  # backoff 1 s, then a new container
        assert w.status.state is ReplicaState.RUNNING and w.status.restarts == 1
        assert (await rt.get_container("db-0")).pid != first_pid


async def test_on_failure_policy_restarts_after_liveness_even_on_clean_exit() -> None:
    healthy = {"alive": False}
    rt = world(healthy)
    clock = rt.clock
    assert isinstance(clock, FakeClock)
    liveness = exec_probe("alive", interval_s=1.0, failure_threshold=1, start_grace_s=1.5)
    async with running(rt, clock) as (sup, _):
        sup.assign([assigned(HealthChecks(liveness=liveness), RestartMode.ON_FAILURE)])
        await settle(clock, 1.2)  # failures at t=0 and t=1 are in the 1.5 s grace
        w = sup.workers["db-0"]
        assert w.status.state is ReplicaState.RUNNING
        await settle(clock, 1.0)  # t=2: counted, threshold 1 -> stopped
        assert w.status.state is ReplicaState.FAILED
        healthy["alive"] = True
        await settle(clock, 1.5)
        assert w.status.state is ReplicaState.RUNNING and w.status.restarts == 1


async def test_a_probe_over_its_timeout_fails() -> None:
    clock = FakeClock()
    rt = FakeRuntime(
        clock,
        default=FakeBehavior(exec=lambda argv: FakeExec(0, duration=5.0)),
    )
    readiness = exec_probe("slow", interval_s=2.0, timeout_s=0.5, failure_threshold=1)
    async with running(rt, clock) as (sup, _):
        sup.assign([assigned(HealthChecks(readiness=readiness))])
        await settle(clock, 1.0)
        st = sup.workers["db-0"].status
        assert not st.ready and st.health == "readiness exec slow: timed out after 0.5s"


async def test_volume_usage_is_measured_and_rounded_up_to_mib(tmp_path: object) -> None:
    from pathlib import Path

    from cloudless.agent.supervisor import VOLUME_USAGE_S
    from cloudless.model.volumes import Volume

    root = Path(str(tmp_path))
    clock = FakeClock()
    rt = FakeRuntime(clock)
    spec = WorkloadSpec(name="db", image="img", volumes=(Volume("data", "/data"),))
    sup = Supervisor(rt, clock, lambda: None, volumes_root=root)
    async with asyncio.TaskGroup() as tg:
        t1, t2 = tg.create_task(rt.run()), tg.create_task(sup.run())
        await settle(clock)
        sup.assign([Assigned("db-0", "db", 1, spec)])
        for _ in range(200):  # the volume directory is made in a thread: real time
            if (root / "db" / "db-0" / "data").exists():
                break
            await asyncio.sleep(0.01)
        (root / "db" / "db-0" / "data" / "blob").write_bytes(b"x" * (3 << 19))  # 1.5 MiB
        await settle(clock, VOLUME_USAGE_S + 0.1)
        st = sup.workers["db-0"].status
        for _ in range(200):
            if st.volume_bytes:
                break
            await asyncio.sleep(0.01)
        assert st.volume_bytes == {"data": 2 << 20}  # 1.5 MiB on disk, rounded up to 2 MiB
        t1.cancel()
        t2.cancel()
