"""The agent's local supervisor: converge containers on the assigned replica set.

One ``ReplicaWorker`` per assigned replica runs the replica's life on this node: pull, create,
start, wait for the exit, apply the restart policy with backoff, and on removal stop (SIGTERM,
then SIGKILL after the spec's stop timeout) and delete. The supervisor keeps working from the
last assignment it saw while the coordinator is unreachable: edge nodes lose their uplink
often, and their containers must keep running and restarting by policy meanwhile.

Container ids are replica ids. A container whose ``cloudless.spec-version`` label differs from
the assignment's is replaced; one that matches is adopted (agent restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cloudless.agent.ports import PortAllocator
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.errors import ContainerNotFound, StartFailed
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.runtime.types import ContainerSpec, ContainerState, ContainerStatus

log = logging.getLogger("cloudless.agent.supervisor")

SPEC_VERSION_LABEL = "cloudless.spec-version"
PORTS_LABEL = "cloudless.ports"  # "8080=20001,9090=20002": declared port = host port
POLL_S = 2.0


@dataclass(frozen=True)
class Assigned:
    replica_id: str
    workload: str
    spec_version: int
    spec: WorkloadSpec
    running: bool = True  # desired state


@dataclass
class LocalStatus:
    """What this node reports for a replica (the agent's observed state)."""

    replica_id: str
    workload: str
    spec_version: int
    state: ReplicaState = ReplicaState.PENDING
    reason: str = ""
    exit_code: int | None = None
    restarts: int = 0
    started_at: float = 0.0
    endpoint: str = ""


def ports_label(ports: dict[int, int]) -> str:
    return ",".join(f"{c}={h}" for c, h in sorted(ports.items()))


def parse_ports_label(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in filter(None, text.split(",")):
        c, _, h = part.partition("=")
        if c.isdigit() and h.isdigit():
            out[int(c)] = int(h)
    return out


def container_spec(a: Assigned, ports: dict[int, int] | None = None) -> ContainerSpec:
    env = dict(a.spec.env)
    env.update({"CLOUDLESS_REPLICA": a.replica_id, "CLOUDLESS_WORKLOAD": a.workload})
    labels = {SPEC_VERSION_LABEL: str(a.spec_version)}
    if ports:
        first = ports[a.spec.ports[0]] if a.spec.ports else next(iter(ports.values()))
        env["PORT"] = str(first)
        for c, h in ports.items():
            env[f"CLOUDLESS_PORT_{c}"] = str(h)
        labels[PORTS_LABEL] = ports_label(ports)
    return ContainerSpec(
        id=a.replica_id,
        image=a.spec.image,
        command=a.spec.command,
        args=a.spec.args,
        env=env,
        cpu_millicores=a.spec.resources.cpu_millis,
        memory_bytes=a.spec.resources.memory_bytes,
        labels=labels,
        workload_id=a.workload,
        replica_id=a.replica_id,
    )


def exit_reason(st: ContainerStatus) -> str:
    if st.oom_killed:
        return "OOM killed (memory limit exceeded)"
    if st.exit_code == 0:
        return "completed"
    if st.exit_code is not None and st.exit_code > 128:
        return f"killed by signal {st.exit_code - 128} (exit code {st.exit_code})"
    return f"exit code {st.exit_code}"


@dataclass
class ReplicaWorker:
    assigned: Assigned
    runtime: ContainerRuntime
    clock: Clock
    on_change: Callable[[], None]
    ports: PortAllocator | None = None
    advertise: str = ""
    host_ports: dict[int, int] = field(default_factory=dict)
    status: LocalStatus = field(init=False)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        a = self.assigned
        self.status = LocalStatus(a.replica_id, a.workload, a.spec_version)

    def _set(self, state: ReplicaState, reason: str = "", exit_code: int | None = None) -> None:
        s = self.status
        if (s.state, s.reason, s.exit_code) != (state, reason, exit_code):
            s.state, s.reason, s.exit_code = state, reason, exit_code
            self.on_change()

    async def run(self) -> None:
        a = self.assigned
        rid = a.replica_id
        policy = a.spec.restart
        current = await self._existing()
        while True:
            if current is None:
                try:
                    self._set(ReplicaState.PULLING)
                    await self.runtime.pull_image(a.spec.image)
                    self._set(ReplicaState.STARTING)
                    self._ensure_ports()
                    await self.runtime.create_container(container_spec(a, self.host_ports))
                    self.exited.clear()
                    current = await self.runtime.start_container(rid)
                except (StartFailed, CloudlessError) as e:
                    await self._remove_quietly()
                    current = None
                    self._set(ReplicaState.FAILED, str(e))
                    if not policy.should_restart(1, self.status.restarts):
                        return
                    await self.clock.sleep(policy.delay(self.status.restarts))
                    self.status.restarts += 1
                    continue
            if current.state is ContainerState.RUNNING:
                self.status.started_at = current.started_at or self.clock.now()
                self._set(ReplicaState.RUNNING)
                current = await self._wait_exit()
            if current.state is ContainerState.CREATED:
                current = await self.runtime.start_container(rid)
                continue
            code = current.exit_code if current.exit_code is not None else -1
            terminal = ReplicaState.EXITED if code == 0 else ReplicaState.FAILED
            self._set(terminal, exit_reason(current), code)
            if not policy.should_restart(code, self.status.restarts):
                return
            await self.clock.sleep(policy.delay(self.status.restarts))
            self.status.restarts += 1
            await self._remove_quietly()
            current = None

    async def _existing(self) -> ContainerStatus | None:
        try:
            st = await self.runtime.get_container(self.assigned.replica_id)
        except ContainerNotFound:
            return None
        if st.labels.get(SPEC_VERSION_LABEL) != str(self.assigned.spec_version):
            log.info("replacing %s: spec version changed", self.assigned.replica_id)
            await self._remove_quietly()
            return None
        log.info("adopted container %s (%s)", st.id, st.state.value)
        self.host_ports = parse_ports_label(st.labels.get(PORTS_LABEL, ""))
        if self.ports is not None:
            self.ports.reserve(self.host_ports.values())
        self._publish_endpoint()
        return st

    def _ensure_ports(self) -> None:
        declared = list(self.assigned.spec.ports)
        if not declared or self.host_ports:
            return
        if self.ports is None:
            self.host_ports = {p: p for p in declared}
        else:
            self.host_ports = dict(zip(declared, self.ports.allocate(len(declared)), strict=True))
        self._publish_endpoint()

    def _publish_endpoint(self) -> None:
        if self.host_ports and self.assigned.spec.ports:
            port = self.host_ports.get(self.assigned.spec.ports[0])
            if port:
                self.status.endpoint = f"{self.advertise or '127.0.0.1'}:{port}"

    def release_ports(self) -> None:
        if self.ports is not None:
            self.ports.release(self.host_ports.values())

    async def _wait_exit(self) -> ContainerStatus:
        rid = self.assigned.replica_id
        while True:
            await _first(self.exited.wait(), self.clock.sleep(POLL_S))
            self.exited.clear()
            try:
                st = await self.runtime.get_container(rid)
            except ContainerNotFound:
                return ContainerStatus(
                    rid,
                    self.assigned.spec.image,
                    ContainerState.EXITED,
                    exit_code=-1,
                    reason="container vanished",
                )
            if st.state is not ContainerState.RUNNING:
                return st

    async def _remove_quietly(self) -> None:
        with contextlib.suppress(ContainerNotFound):
            await self.runtime.delete_container(self.assigned.replica_id)

    async def remove(self) -> None:
        """Stop (SIGTERM, then SIGKILL after the spec's stop timeout) and delete."""
        rid = self.assigned.replica_id
        try:
            await self.runtime.stop_container(rid, timeout=self.assigned.spec.stop_timeout_s)
        except ContainerNotFound:
            return
        except CloudlessError as e:
            log.warning("stopping %s: %s", rid, e)
        await self._remove_quietly()
        self.release_ports()


async def _first(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Supervisor:
    """Owns the workers; ``assign`` replaces the desired set (full-set semantics)."""

    def __init__(
        self,
        runtime: ContainerRuntime,
        clock: Clock,
        on_change: Callable[[], None],
        *,
        ports: PortAllocator | None = None,
        advertise: str = "",
    ):
        self.ports = ports or PortAllocator()
        self.advertise = advertise
        self.runtime = runtime
        self.clock = clock
        self.on_change = on_change
        self.workers: dict[str, ReplicaWorker] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._removals: set[asyncio.Task[None]] = set()
        self._removing: dict[str, asyncio.Task[None]] = {}
        self.stopped: dict[str, LocalStatus] = {}  # stopped on request, reported until dropped
        # A set ``assign`` received before ``run`` applied its initial one (None: none yet).
        self._early: list[Assigned] | None = None
        self._started = False

    async def run(self, initial: list[Assigned] | None = None) -> None:
        """Converge on ``initial`` (the set persisted by the previous process), unless the
        coordinator's set arrived while this was starting: that one is newer, and applying
        the persisted set after it would stop what the coordinator just assigned and run what
        it had removed, with nothing to correct it (the coordinator pushes a set only when it
        changes)."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self._dispatch_exits())
            await self._adopt_orphans_check(initial or [])
            self._started = True
            first, self._early = self._early, None
            if first is None:
                first = initial or []
            else:
                log.info(
                    "starting from the coordinator's set (%d replicas, received while starting), "
                    "not the %d persisted",
                    len(first),
                    len(initial or []),
                )
            self.assign(first)
            await asyncio.Event().wait()

    async def _adopt_orphans_check(self, initial: list[Assigned]) -> None:
        """After a restart: containers this node holds that are not assigned are stopped."""
        try:
            found = await self.runtime.recover()
        except CloudlessError as e:
            log.warning("recover failed: %s", e)
            return
        latest = self._early if self._early is not None else initial
        wanted = {a.replica_id for a in latest if a.running}
        for st in found:
            if st.id not in wanted:
                log.info("removing unassigned container %s found at start", st.id)
                self._start_removal(
                    ReplicaWorker(
                        Assigned(st.id, st.workload_id, -1, WorkloadSpec(name="x", image=st.image)),
                        self.runtime,
                        self.clock,
                        self.on_change,
                    )
                )

    def assign(self, desired: list[Assigned]) -> None:
        """Converge on ``desired`` (the full set for this node).

        Replicas assigned with desired state *stopped* are stopped (SIGTERM, timeout, SIGKILL)
        and then reported ``exited`` ("stopped") for as long as they stay in the set, so the
        coordinator learns they are gone and can drop their records.

        Before ``run`` has applied its initial set, the set is kept and applied instead of it.
        """
        if not self._started:
            self._early = list(desired)
            return
        assert self._tg is not None, "Supervisor.run() must be running"
        want = {a.replica_id: a for a in desired if a.running}
        stop = {a.replica_id: a for a in desired if not a.running}
        for rid in list(self.workers):
            w = self.workers[rid]
            a = want.get(rid)
            if a is None or a.spec_version != w.assigned.spec_version:
                del self.workers[rid]
                if rid in stop:
                    self.stopped[rid] = w.status  # reported as it is until it has stopped
                self._stop_worker(w)
        for rid in list(self.stopped):
            if rid not in stop:
                del self.stopped[rid]
        for rid, a in stop.items():
            if rid not in self.stopped and rid not in self.workers:
                # Nothing of it runs here (anymore): report it stopped right away.
                self.stopped[rid] = LocalStatus(
                    rid, a.workload, a.spec_version, ReplicaState.EXITED, "stopped"
                )
        for rid, a in want.items():
            if rid not in self.workers:
                w = ReplicaWorker(
                    a, self.runtime, self.clock, self.on_change, self.ports, self.advertise
                )
                self.workers[rid] = w
                w.task = self._tg.create_task(self._guard(w))
        self.on_change()

    async def _guard(self, w: ReplicaWorker) -> None:
        pending = self._removing.get(w.assigned.replica_id)
        if pending is not None:  # the previous incarnation must be gone first
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        try:
            await w.run()
        except CloudlessError as e:
            w._set(ReplicaState.FAILED, str(e))

    def _stop_worker(self, w: ReplicaWorker) -> None:
        if w.task is not None:
            w.task.cancel()
        self._start_removal(w)

    def _start_removal(self, w: ReplicaWorker) -> None:
        assert self._tg is not None
        prev = w.task

        async def removal() -> None:
            if prev is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await prev
            await w.remove()
            st = self.stopped.get(w.assigned.replica_id)
            if st is not None:
                st.state, st.reason = ReplicaState.EXITED, "stopped"
                self.on_change()

        rid = w.assigned.replica_id
        t = self._tg.create_task(removal())
        self._removals.add(t)
        self._removing[rid] = t

        def done(t: asyncio.Task[None]) -> None:
            self._removals.discard(t)
            if self._removing.get(rid) is t:
                del self._removing[rid]

        t.add_done_callback(done)

    async def _dispatch_exits(self) -> None:
        async for ex in self.runtime.exits():
            w = self.workers.get(ex.id)
            if w is not None:
                w.exited.set()

    def statuses(self) -> list[LocalStatus]:
        live = {rid: w.status for rid, w in self.workers.items()}
        return [st for _, st in sorted({**self.stopped, **live}.items())]

    async def idle(self) -> None:
        """Wait for pending removals (tests)."""
        while self._removals:
            await asyncio.gather(*list(self._removals), return_exceptions=True)
