"""The agent's supervisor against the fake runtime, driven by a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator

import pytest

from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.lib import waits
from cloudless.lib.clock import FakeClock
from cloudless.model.registry_auth import registry_secret
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import RestartMode, RestartPolicy, WorkloadSpec
from cloudless.runtime.fake import FakeBehavior, FakeHost, FakeRuntime
from cloudless.runtime.types import ContainerState, RegistryAuth


def assigned(rid: str, version: int = 1, image: str = "img", **restart: object) -> Assigned:
    policy = RestartPolicy(**restart) if restart else RestartPolicy()  # type: ignore[arg-type]
    spec = WorkloadSpec(name="web", image=image, restart=policy, stop_timeout_s=5)
    return Assigned(rid, "web", version, spec)


@contextlib.asynccontextmanager
async def running(
    rt: FakeRuntime, clock: FakeClock, initial: list[Assigned] | None = None
) -> AsyncIterator[Supervisor]:
    changes: list[int] = []
    sup = Supervisor(rt, clock, lambda: changes.append(1))
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(rt.run())
        t2 = tg.create_task(sup.run(initial))
        await settle(clock)
        try:
            yield sup
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


def state(sup: Supervisor, rid: str) -> ReplicaState:
    return sup.workers[rid].status.state


async def test_runs_assigned_and_removes_unassigned() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    async with running(rt, clock) as sup:
        sup.assign([assigned("a"), assigned("b")])
        await settle(clock)
        assert {c.id: c.state for c in await rt.list_containers()} == {
            "a": ContainerState.RUNNING,
            "b": ContainerState.RUNNING,
        }
        assert state(sup, "a") is ReplicaState.RUNNING
        sup.assign([assigned("b")])
        await settle(clock)
        await sup.idle()
        assert [c.id for c in await rt.list_containers()] == ["b"]


async def test_restart_always_with_backoff() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, default=FakeBehavior(run_for=1.0, exit_code=3))
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", backoff_base_s=2.0)])
        await settle(clock, 1.1)  # exits at t=1 with code 3
        assert state(sup, "a") is ReplicaState.FAILED
        assert sup.workers["a"].status.reason == "exit code 3"
        await settle(clock, 2.4)  # backoff 2 * 2**0 = 2 s (+ loop latency), then restarted
        assert state(sup, "a") is ReplicaState.RUNNING
        assert sup.workers["a"].status.restarts == 1


@pytest.mark.parametrize(
    ("mode", "code", "final", "restarted"),
    [
        (RestartMode.NEVER, 1, ReplicaState.FAILED, False),
        (RestartMode.ON_FAILURE, 0, ReplicaState.EXITED, False),
        (RestartMode.ON_FAILURE, 2, ReplicaState.RUNNING, True),
    ],
)
async def test_restart_policies(
    mode: RestartMode, code: int, final: ReplicaState, restarted: bool
) -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, default=FakeBehavior(run_for=1.0, exit_code=code))
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", mode=mode, backoff_base_s=0.5)])
        await settle(clock, 1.2)  # exit at 1.0, restart (if any) at 1.5
        await settle(clock, 0.5)
        assert state(sup, "a") is final
        assert (sup.workers["a"].status.restarts == 1) is restarted


async def test_oom_is_reported_as_such() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, default=FakeBehavior(oom_after=1.0))
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", mode=RestartMode.NEVER)])
        await settle(clock, 1.1)
        s = sup.workers["a"].status
        assert (s.state, s.exit_code) == (ReplicaState.FAILED, 137)
        assert "OOM" in s.reason


async def test_start_error_is_reported_and_retried() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, by_image={"bad": FakeBehavior(start_error='exec: "nope": not found')})
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", image="bad", backoff_base_s=1.0)])
        await settle(clock)
        s = sup.workers["a"].status
        assert s.state is ReplicaState.FAILED and "nope" in s.reason
        assert await rt.list_containers() == []  # the failed container was cleaned up


async def test_spec_version_change_replaces_container() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock)
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", 1)])
        await settle(clock)
        sup.assign([assigned("a", 2, image="img:2")])
        await settle(clock)
        await sup.idle()
        await settle(clock)
        [c] = await rt.list_containers()
        assert c.labels["cloudless.spec-version"] == "2" and c.image == "img:2"
        assert state(sup, "a") is ReplicaState.RUNNING


async def test_a_new_version_with_the_same_spec_restarts_nothing() -> None:
    # a rollback or an undo to the spec a replica already runs: relabelled in place
    clock = FakeClock()
    rt = FakeRuntime(clock)
    async with running(rt, clock) as sup:
        sup.assign([assigned("a", 1)])
        await settle(clock)
        pid = (await rt.get_container("a")).pid
        sup.assign([assigned("a", 3)])
        await settle(clock)
        assert (await rt.get_container("a")).pid == pid
        assert sup.workers["a"].status.spec_version == 3
        assert state(sup, "a") is ReplicaState.RUNNING


async def test_agent_restart_adopts_and_removes_strays() -> None:
    clock = FakeClock()
    host = FakeHost()
    rt1 = FakeRuntime(clock, host=host)
    async with running(rt1, clock) as sup:
        sup.assign([assigned("a"), assigned("b")])
        await settle(clock)
        pid_a = (await rt1.get_container("a")).pid
    # a new agent process: only "a" is still assigned (persisted assignment)
    rt2 = FakeRuntime(clock, host=host)
    async with running(rt2, clock, initial=[assigned("a")]) as sup2:
        await settle(clock)
        await sup2.idle()
        [c] = await rt2.list_containers()
        assert (c.id, c.pid) == ("a", pid_a)  # adopted, not restarted
        assert state(sup2, "a") is ReplicaState.RUNNING


async def test_declared_ports_get_distinct_host_ports_and_survive_restart() -> None:
    from dataclasses import replace

    from cloudless.agent.ports import PortAllocator

    clock = FakeClock()
    host = FakeHost()
    rt = FakeRuntime(clock, host=host)
    alloc = PortAllocator(30000, 30010, is_free=lambda p: p != 30001)  # 30001 is busy
    sup = Supervisor(rt, clock, lambda: None, ports=alloc, advertise="10.0.0.5")
    a = assigned("a")
    a = replace(a, spec=replace(a.spec, ports=(8080,)))
    b = replace(a, replica_id="b")
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(rt.run())
        t2 = tg.create_task(sup.run())
        await settle(clock)
        sup.assign([a, b])
        await settle(clock)
        env_a = host.containers["a"].spec.env
        env_b = host.containers["b"].spec.env
        # ports handed out in order, skipping the busy 30001
        assert (env_a["PORT"], env_b["PORT"]) == ("30000", "30002")
        assert env_a["CLOUDLESS_PORT_8080"] == "30000"
        assert sup.workers["a"].status.endpoint == "10.0.0.5:30000"
        t1.cancel()
        t2.cancel()
    # a restarted agent adopts "a" and keeps its port
    rt2 = FakeRuntime(clock, host=host)
    alloc2 = PortAllocator(30000, 30010, is_free=lambda p: True)
    sup2 = Supervisor(rt2, clock, lambda: None, ports=alloc2, advertise="10.0.0.5")
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(rt2.run())
        t2 = tg.create_task(sup2.run([a]))
        await settle(clock)
        assert sup2.workers["a"].status.endpoint == "10.0.0.5:30000"
        assert 30000 in alloc2.taken
        t1.cancel()
        t2.cancel()


class SlowRecover(FakeRuntime):
    """``recover`` (listing containerd's containers at agent start) waits for ``release``:
    a loaded host, where the link connects and receives its set before it returns."""

    def __init__(self, clock: FakeClock, host: FakeHost) -> None:
        super().__init__(clock, host=host)
        self.release = asyncio.Event()

    async def recover(self):  # type: ignore[no-untyped-def]
        await self.release.wait()
        return await super().recover()


async def test_a_set_received_while_starting_is_not_overwritten_by_the_persisted_one() -> None:
    """Chaos 'fill an agent's data disk': the persisted set is stale ("old", whose replica
    the coordinator removed while the disk was full). The restarted agent's link receives the
    coordinator's set ("new") while the supervisor is still recovering; the persisted set
    must not then replace it, or "new" is stopped and never comes back (the coordinator
    pushes only changes) and "old" is run again."""
    clock = FakeClock()
    rt = SlowRecover(clock, FakeHost())
    sup = Supervisor(rt, clock, lambda: None)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(rt.run()), tg.create_task(sup.run([assigned("old")]))]
        await settle(clock)
        sup.assign([assigned("new")])  # the coordinator's set, during recover()
        await settle(clock)
        rt.release.set()
        await settle(clock, 1.0)
        await sup.idle()
        assert set(sup.workers) == {"new"}
        assert state(sup, "new") is ReplicaState.RUNNING
        assert [c.id for c in await rt.list_containers()] == ["new"]
        for t in tasks:
            t.cancel()


async def test_a_set_arriving_while_the_agent_shuts_down_leaves_containers_alone() -> None:
    """The task group is aborting (SIGTERM): a set that would remove a replica neither raises
    nor leaves a coroutine that is never awaited; the container stays for the next start."""
    clock = FakeClock()
    rt = FakeRuntime(clock)
    sup = Supervisor(rt, clock, lambda: None)
    rt_task = asyncio.create_task(rt.run())
    task = asyncio.create_task(sup.run([assigned("a")]))
    await settle(clock)
    assert [c.id for c in await rt.list_containers()] == ["a"]
    task.cancel()
    await asyncio.sleep(0)  # the group is now aborting, its workers being cancelled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sup.assign([])
        gc.collect()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert [c.id for c in await rt.list_containers()] == ["a"]
    rt_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await rt_task


async def test_a_removal_cancelled_while_its_worker_ends_leaves_the_container() -> None:
    """The agent stops while a removal waits for its worker's task to end: the removal ends
    too, and the container stays for the next start (its cancel is not taken for the
    worker's)."""
    clock = FakeClock()
    rt = FakeRuntime(clock)
    async with running(rt, clock, [assigned("a")]) as sup:
        w = sup.workers["a"]
        assert w.task is not None
        await waits.ended(w.task)
        gate = asyncio.Event()

        async def slow_to_end() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await gate.wait()
                raise

        w.task = asyncio.create_task(slow_to_end())
        await asyncio.sleep(0)
        sup.assign([])
        await asyncio.sleep(0)
        removal = sup._removing["a"]
        removal.cancel()
        gate.set()
        with contextlib.suppress(asyncio.CancelledError):
            await removal
        await settle(clock)
        assert removal.cancelled()
        assert [c.id for c in await rt.list_containers()] == ["a"]


async def test_image_pull_secret_is_used_for_the_pull_and_refreshed_values_retried() -> None:
    """A registry wanting credentials: without a value the replica fails naming the secret;
    a wrong password fails naming the registry; the coordinator's new value (same spec
    version) is used by the next restart, and the container runs."""
    clock = FakeClock()
    host = FakeHost()
    host.registry_auth["reg:5000"] = RegistryAuth("deploy", "right")
    rt = FakeRuntime(clock, host=host)
    policy = RestartPolicy(backoff_base_s=1.0, backoff_cap_s=1.0)
    spec = WorkloadSpec(
        name="web", image="reg:5000/web:1", restart=policy, image_pull_secret="regcred"
    )

    def a(value: bytes | None) -> Assigned:
        return Assigned("w", "web", 1, spec, secrets={"regcred": value} if value else {})

    async with running(rt, clock) as sup:
        sup.assign([a(None)])
        await settle(clock)
        assert state(sup, "w") is ReplicaState.FAILED
        assert "image_pull_secret 'regcred': the coordinator sent no value" in (
            sup.workers["w"].status.reason
        )
        sup.assign([a(registry_secret("reg:5000", "deploy", "wrong"))])
        await settle(clock, 1.1)
        reason = sup.workers["w"].status.reason
        assert "registry reg:5000 refused access" in reason and "'deploy'" in reason
        sup.assign([a(registry_secret("reg:5000", "deploy", "right"))])
        await settle(clock, 1.1)
        assert state(sup, "w") is ReplicaState.RUNNING
        assert [c.id for c in await rt.list_containers()] == ["w"]


async def test_the_restart_count_goes_on_across_an_agent_restart() -> None:
    """Each restart makes a new container labelled with the count so far; a restarted agent
    adopts the container and counts on from its label instead of from 0."""
    clock = FakeClock()
    host = FakeHost()
    behaviour = FakeBehavior(run_for=1.0, exit_code=3)
    a = assigned("a", backoff_base_s=2.0)
    rt = FakeRuntime(clock, default=behaviour, host=host)
    async with running(rt, clock) as sup:
        sup.assign([a])
        # exits at 1, restarted after 2 s (3); exits at 4, restarted after 4 s (8), plus the
        # loop's latency on the fake clock (each step a little late): running until about 9
        await settle(clock, 8.6)
        assert state(sup, "a") is ReplicaState.RUNNING
        assert sup.workers["a"].status.restarts == 2
    assert host.containers["a"].spec.labels["cloudless.restarts"] == "2"
    rt2 = FakeRuntime(clock, default=behaviour, host=host)
    async with running(rt2, clock, [a]) as sup2:
        st = sup2.workers["a"].status
        assert (st.state, st.restarts) == (ReplicaState.RUNNING, 2)  # adopted, not 0
        # exits at about 9, restarted 2 * 2**2 = 8 s later: the third restart, at about 17
        for _ in range(40):
            await settle(clock, 0.5)
            if st.restarts == 3:
                break
        assert st.restarts == 3 and 16.5 < clock.monotonic() < 19.0, clock.monotonic()
        assert host.containers["a"].spec.labels["cloudless.restarts"] == "3"


async def test_a_first_container_has_no_restart_label() -> None:
    clock = FakeClock()
    host = FakeHost()
    async with running(FakeRuntime(clock, host=host), clock) as sup:
        sup.assign([assigned("a")])
        await settle(clock)
        assert "cloudless.restarts" not in host.containers["a"].spec.labels
        assert sup.workers["a"].status.restarts == 0


async def test_a_restart_count_without_a_container_outlives_the_agent(tmp_path: object) -> None:
    """Between failed starts there is no container to carry the count: the ledger in the
    agent's data directory does, for the replica's spec version."""
    from pathlib import Path

    from cloudless.agent.restart_ledger import RestartLedger

    data = Path(str(tmp_path))
    clock = FakeClock()
    host = FakeHost()
    failing = FakeBehavior(start_error="exec format error")
    a = assigned("a", backoff_base_s=2.0)
    rt = FakeRuntime(clock, default=failing, host=host)
    sup = Supervisor(rt, clock, lambda: None, ledger=RestartLedger(data))
    async with asyncio.TaskGroup() as tg:
        t1, t2 = tg.create_task(rt.run()), tg.create_task(sup.run([a]))
        # fails at 0, retried after 2 s (1), fails, retried after 4 s (2) at about 6
        await settle(clock, 6.5)
        assert sup.workers["a"].status.restarts == 2
        assert "a" not in host.containers  # nothing carries the count but the ledger
        t1.cancel()
        t2.cancel()
    rt2 = FakeRuntime(clock, default=failing, host=host)
    sup2 = Supervisor(rt2, clock, lambda: None, ledger=RestartLedger(data))
    async with asyncio.TaskGroup() as tg:
        t1, t2 = tg.create_task(rt2.run()), tg.create_task(sup2.run([a]))
        await settle(clock)
        assert sup2.workers["a"].status.restarts == 2  # not 0
        await settle(clock, 8.5)  # the next failure, retried after 2 * 2**2 = 8 s
        assert sup2.workers["a"].status.restarts == 3
        # another version of the replica counts from 0; removing the replica forgets it
        assert RestartLedger(data).get("a", 2) == 0 and RestartLedger(data).get("a", 1) == 3
        sup2.assign([])
        await settle(clock)
        assert RestartLedger(data).get("a", 1) == 0
        t1.cancel()
        t2.cancel()
