"""The agent's local supervisor: converge containers on the assigned replica set.

One ``ReplicaWorker`` per assigned replica runs the replica's life on this node: pull, create,
start, wait for the exit, apply the restart policy with backoff, and on removal stop (SIGTERM,
then SIGKILL after the spec's stop timeout) and delete. The supervisor keeps working from the
last assignment it saw while the coordinator is unreachable: edge nodes lose their uplink
often, and their containers must keep running and restarting by policy meanwhile.

Health checks (``cloudless.agent.health``) run beside each running container: a replica with
a readiness check is ``ready`` only while it passes (without one, while it runs), and a failing
liveness check stops the container and counts as a failed exit for the restart policy.

Container ids are replica ids. A container whose ``cloudless.spec-version`` label differs from
the assignment's is replaced; one that matches is adopted (agent restart), and the replica's
restart count goes on from the one the container was made with (its label 'cloudless.restarts'), or,
with no container (between a failed start and the next), from the agent's ``RestartLedger``.

With container networking (``network``, an ``agent.network.ContainerNetworking``) a replica
gets its own namespace and address before it is created, keeps them across restarts of its
container, and loses them when it is removed; its declared ports are its container's own
(``PORT`` is the first one) and its endpoint is ``<container ip>:<port>`` (``:0`` with no
port), also once adopted after an agent restart. Without it (or
while the device cannot network), declared ports map to host ports as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloudless.agent import secret_files, volumes
from cloudless.agent.assignment import (
    PORTS_LABEL,
    RESTARTS_LABEL,
    SPEC_VERSION_LABEL,
    Assigned,
    LocalStatus,
    container_spec,
    exit_reason,
    parse_ports_label,
    ports_label,
    pull_auth,
    restarts_from_label,
    same_template,
)
from cloudless.agent.health.probes import Prober
from cloudless.agent.health.runner import HealthRunner
from cloudless.agent.network import ContainerNetworking, NetAttachment
from cloudless.agent.ports import PortAllocator
from cloudless.agent.restart_ledger import RestartLedger
from cloudless.agent.volume_quota import PlainVolumes, VolumeStore
from cloudless.agent.workload_identity import WorkloadIdentities
from cloudless.lib import waits
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.first import first_of
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.network.cni import PortMapping
from cloudless.observability.metrics import (
    CONTAINER_EXITS,
    CONTAINER_RESTARTS,
    CONTAINER_STARTS,
    PULL_BYTES,
    PULL_DURATION,
)
from cloudless.observability.tracing import child_of, tracer
from cloudless.runtime.errors import ContainerNotFound, StartFailed
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.runtime.types import BindMount, ContainerState, ContainerStatus, PullProgress

log = logging.getLogger("cloudless.agent.supervisor")

__all__ = [  # the values live in ``assignment``; re-exported for the link and tests
    "PORTS_LABEL",
    "RESTARTS_LABEL",
    "SPEC_VERSION_LABEL",
    "Assigned",
    "LocalStatus",
    "ReplicaWorker",
    "Supervisor",
    "container_spec",
    "exit_reason",
    "parse_ports_label",
    "ports_label",
    "same_template",
]

NET_LABEL = "cloudless.net-ip"  # the container's own address (it has its own namespace)


def _published(spec: WorkloadSpec) -> tuple[PortMapping, ...]:
    """The device ports the spec publishes, as CNI ``portmap`` mappings (tcp)."""
    return tuple(PortMapping(pp.host_port, pp.port) for pp in spec.published)


POLL_S = 2.0
VOLUME_USAGE_S = 30.0
MIB = 1 << 20


@dataclass
class ReplicaWorker:
    assigned: Assigned
    runtime: ContainerRuntime
    clock: Clock
    on_change: Callable[[], None]
    ports: PortAllocator | None = None
    advertise: str = ""
    volumes_root: Path | None = None
    secrets_root: Path | None = None
    network: ContainerNetworking | None = None
    identities: WorkloadIdentities | None = None
    volume_store: VolumeStore = field(default_factory=PlainVolumes)
    ledger: RestartLedger | None = None
    host_ports: dict[int, int] = field(default_factory=dict)
    net: NetAttachment | None = None
    status: LocalStatus = field(init=False)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        a = self.assigned
        self.status = LocalStatus(a.replica_id, a.workload, a.spec_version)
        if self.ledger is not None:  # a container, if adopted, says it instead
            self.status.restarts = self.ledger.get(a.replica_id, a.spec_version)

    def _count_restart(self) -> None:
        self.status.restarts += 1
        CONTAINER_RESTARTS.inc()
        if self.ledger is not None:
            a = self.assigned
            self.ledger.record(a.replica_id, a.spec_version, self.status.restarts)

    def _set(
        self,
        state: ReplicaState,
        reason: str = "",
        exit_code: int | None = None,
        *,
        ready: bool = False,
        health: str | None = None,
    ) -> None:
        s = self.status
        health = s.health if health is None else health
        ready = ready and state is ReplicaState.RUNNING
        new = (state, reason, exit_code, ready, health)
        if (s.state, s.reason, s.exit_code, s.ready, s.health) != new:
            s.state, s.reason, s.exit_code, s.ready, s.health = new
            self.on_change()

    def _on_ready(self, ready: bool, detail: str) -> None:
        if self.status.state is ReplicaState.RUNNING:
            self._set(ReplicaState.RUNNING, ready=ready, health=detail)

    async def run(self) -> None:
        a = self.assigned
        rid = a.replica_id
        policy = a.spec.restart
        current = await self._existing()
        trace = a.trace  # only the first start joins the apply's trace
        while True:
            if current is None:
                attempt, trace = trace, ""
                try:
                    current = await self._start(attempt)
                except (StartFailed, CloudlessError) as e:
                    await self._remove_quietly()
                    current = None
                    self._set(ReplicaState.FAILED, str(e))
                    if not policy.should_restart(1, self.status.restarts):
                        return
                    await self.clock.sleep(policy.delay(self.status.restarts))
                    self._count_restart()
                    continue
            unhealthy: str | None = None
            if current.state is ContainerState.RUNNING:
                self.status.started_at = current.started_at or self.clock.now()
                no_readiness = a.spec.health.readiness is None
                self._set(ReplicaState.RUNNING, ready=no_readiness, health="")
                current, unhealthy = await self._watch()
            if current.state is ContainerState.CREATED:
                current = await self.runtime.start_container(rid)
                continue
            code = current.exit_code if current.exit_code is not None else -1
            if unhealthy is not None:
                # Stopped for failing liveness: a failure whatever the process answered.
                code = code or 1
                self._set(ReplicaState.FAILED, unhealthy, code, health=unhealthy)
            else:
                terminal = ReplicaState.EXITED if code == 0 else ReplicaState.FAILED
                self._set(terminal, exit_reason(current), code)
            how = "oom" if current.oom_killed else self.status.state.value
            CONTAINER_EXITS.labels(how).inc()
            if not policy.should_restart(code, self.status.restarts):
                return
            await self.clock.sleep(policy.delay(self.status.restarts))
            self._count_restart()
            await self._remove_quietly()
            current = None

    async def _start(self, trace: str) -> ContainerStatus:
        """Pull, create and start; each step a span when ``trace`` names a parent."""
        a = self.assigned
        rid = a.replica_id
        tr = tracer()
        with child_of(trace), tr.start_as_current_span("replica.start") as span:
            span.set_attribute("cloudless.replica", rid)
            span.set_attribute("cloudless.image", a.spec.image)
            self._set(ReplicaState.PULLING)
            with tr.start_as_current_span("pull"):
                await self._pull(a.spec.image)
            self._set(ReplicaState.STARTING)
            if self.network is not None and self.net is None:
                with tr.start_as_current_span("network"):
                    self.net = await self.network.attach(rid, _published(a.spec))
            self._ensure_ports()
            mounts = await self._volumes()
            fresh = self.assigned  # secret values may have been refreshed since
            secret_mounts, secret_env = (
                await asyncio.to_thread(
                    secret_files.prepare, self.secrets_root, rid, a.spec, fresh.secrets
                )
                if a.spec.secrets or a.spec.configs
                else ((), {})
            )
            if self.identities is not None:
                secret_mounts = (
                    *secret_mounts,
                    await self.identities.prepare(a.workload, rid),
                )
            spec = container_spec(
                fresh, self.host_ports, mounts + secret_mounts, secret_env, self.status.restarts
            )
            if self.net is not None:
                resolv = BindMount(self.net.resolv_conf, "/etc/resolv.conf", read_only=True)
                spec = replace(
                    spec,
                    netns=self.net.netns,
                    mounts=(*spec.mounts, resolv),
                    labels={**spec.labels, NET_LABEL: self.net.ip},
                )
            try:
                with tr.start_as_current_span("create"):
                    await self.runtime.create_container(spec)
                self.exited.clear()
                with tr.start_as_current_span("start"):
                    current = await self.runtime.start_container(rid)
            except CloudlessError:
                if self.net is not None and self.network is not None:
                    # the next attempt attaches afresh (its namespace may be what failed)
                    await self.network.detach(rid)
                    self.net = None
                raise
            CONTAINER_STARTS.inc()
            return current

    async def _pull(self, image: str) -> None:
        t0 = self.clock.monotonic()
        outcome = "failed"
        seen = 0

        def progress(p: PullProgress) -> None:
            nonlocal seen
            if p.done_bytes > seen:
                PULL_BYTES.inc(p.done_bytes - seen)
                seen = p.done_bytes

        try:
            auth = pull_auth(self.assigned)  # the freshest value the coordinator sent
            await self.runtime.pull_image(image, progress, auth=auth)
            outcome = "pulled"
        finally:
            PULL_DURATION.labels(outcome).observe(self.clock.monotonic() - t0)

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
        self.status.restarts = restarts_from_label(st.labels)
        self.host_ports = parse_ports_label(st.labels.get(PORTS_LABEL, ""))
        if st.labels.get(NET_LABEL) and self.network is not None:
            # its cached attachment
            self.net = await self.network.attach(st.id, _published(self.assigned.spec))
        elif self.ports is not None:
            self.ports.reserve(self.host_ports.values())
        self._publish_endpoint()
        if self.assigned.spec.volumes:
            try:  # its mounts stay as they are; this learns (and reports) their quota mode
                await self._volumes()
            except CloudlessError as e:
                log.warning("adopted %s: %s", st.id, e)
        return st

    async def _volumes(self) -> tuple[BindMount, ...]:
        """The replica's volume mounts, made ready by the volume store; how each is held to its
        size hint goes in the status."""
        a = self.assigned
        if not a.spec.volumes:
            return ()
        if self.volumes_root is None:
            raise CloudlessError(
                f"replica {a.replica_id} declares volumes, and this agent has no volume directory"
            )
        try:
            mounts, quota = await volumes.prepare(
                self.volume_store, self.volumes_root, a.workload, a.replica_id, a.spec
            )
        except (OSError, CloudlessError) as e:
            raise CloudlessError(f"cannot prepare the volumes of {a.replica_id}: {e}") from None
        if quota != self.status.volume_quota:
            self.status.volume_quota = quota
            self.on_change()
        return mounts

    def _ensure_ports(self) -> None:
        declared = list(self.assigned.spec.ports)
        if not declared or self.host_ports:
            self._publish_endpoint()
            return
        if self.ports is None or self.net is not None:  # its own namespace: ports as declared
            self.host_ports = {p: p for p in declared}
        else:
            self.host_ports = dict(zip(declared, self.ports.allocate(len(declared)), strict=True))
        self._publish_endpoint()

    def _publish_endpoint(self) -> None:
        """``<address>:<first declared port>``; a replica with its own network namespace and
        no port reports ``<address>:0``, the address network policies match its traffic by
        (whether the container was started here or adopted after an agent restart)."""
        if self.host_ports and self.assigned.spec.ports:
            port = self.host_ports.get(self.assigned.spec.ports[0])
            if port:
                host = self.net.ip if self.net else self.advertise or "127.0.0.1"
                self.status.endpoint = f"{host}:{port}"
        elif not self.assigned.spec.ports and self.net is not None:
            self.status.endpoint = f"{self.net.ip}:0"

    def release_ports(self) -> None:
        if self.ports is not None and self.net is None:
            self.ports.release(self.host_ports.values())

    async def _watch(self) -> tuple[ContainerStatus, str | None]:
        """Wait for the container to exit while its health checks run. If liveness fails
        first, stop it (SIGTERM, then SIGKILL after the stop timeout) and say why."""
        health = self.assigned.spec.health
        if not health:
            return await self._wait_exit(), None
        since_start = max(0.0, self.clock.now() - (self.status.started_at or self.clock.now()))
        runner = HealthRunner(
            health,
            Prober(
                self.runtime,
                self.assigned.replica_id,
                host=self.net.ip if self.net else "127.0.0.1",
                host_ports=dict(self.host_ports),
            ),
            self.clock,
            self._on_ready,
            started_at=self.clock.monotonic() - since_start,
        )
        # The exit first: when both end in the same turn, the exit is what happened.
        which, value = await first_of(self._wait_exit(), runner.run())
        if which == 0:
            return value, None  # an error waiting for the exit propagates as before
        reason = value
        log.info("replica %s: %s; restarting it", self.assigned.replica_id, reason)
        self._set(ReplicaState.RUNNING, ready=False, health=reason)
        st = await self.runtime.stop_container(
            self.assigned.replica_id, timeout=self.assigned.spec.stop_timeout_s
        )
        return st, reason

    async def _wait_exit(self) -> ContainerStatus:
        rid = self.assigned.replica_id
        while True:
            await first_of(self.exited.wait(), self.clock.sleep(POLL_S))
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
        if self.network is not None:
            await self.network.detach(rid)
            self.net = None
        if self.assigned.spec.secrets or self.assigned.spec.configs:
            await asyncio.to_thread(secret_files.remove, self.secrets_root, rid)
        if self.identities is not None:
            self.identities.remove(rid)


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
        volumes_root: Path | None = None,
        volume_store: VolumeStore | None = None,
        secrets_root: Path | None = None,
        network: ContainerNetworking | None = None,
        identities: WorkloadIdentities | None = None,
        ledger: RestartLedger | None = None,
    ):
        self.ledger = ledger
        self.network = network
        self.volumes_root = volumes_root
        self.volume_store = volume_store or PlainVolumes()
        self.secrets_root = secrets_root
        self.identities = identities
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
        self._dropping: set[str] = set()  # replicas whose volumes are being deleted
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
            tg.create_task(self._measure_volumes())
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
                        network=self.network,
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
            if (
                a is not None
                and a.spec_version != w.assigned.spec_version
                and same_template(a.spec, w.assigned.spec)
            ):
                # A new version with the same spec (a rollback, an undo): relabel, no restart.
                w.assigned = replace(a, secrets=a.secrets or w.assigned.secrets)
                w.status.spec_version = a.spec_version
            if a is not None and a.spec_version == w.assigned.spec_version:
                self._refresh_secrets(w, a)
            if a is None or a.spec_version != w.assigned.spec_version:
                del self.workers[rid]
                if rid in stop:
                    self.stopped[rid] = w.status  # reported as it is until it has stopped
                self._stop_worker(w)
        for rid in list(self.stopped):
            if rid not in stop:
                del self.stopped[rid]
        for rid, a in stop.items():
            if a.drop_volumes and a.spec.volumes and rid not in self._dropping:
                self._dropping.add(rid)
                self._tg.create_task(self._drop_volumes(a))
            if rid not in self.stopped and rid not in self.workers:
                # Nothing of it runs here (anymore): report it stopped right away.
                self.stopped[rid] = LocalStatus(
                    rid, a.workload, a.spec_version, ReplicaState.EXITED, "stopped"
                )
        for rid, a in want.items():
            if rid not in self.workers:
                w = ReplicaWorker(
                    a,
                    self.runtime,
                    self.clock,
                    self.on_change,
                    self.ports,
                    self.advertise,
                    self.volumes_root,
                    self.secrets_root,
                    self.network,
                    self.identities,
                    self.volume_store,
                    self.ledger,
                )
                self.workers[rid] = w
                w.task = self._tg.create_task(self._guard(w))
        self.on_change()

    def _refresh_secrets(self, w: ReplicaWorker, a: Assigned) -> None:
        """New secret or config values for a running replica: its files are rewritten in
        place."""
        if a.secrets and a.secrets != w.assigned.secrets:
            w.assigned = a
            files = [
                (secret_files.file_name(r, kind), a.secrets[key], mode)
                for r, mode, kind in secret_files.file_refs(a.spec)
                if r.path and (key := secret_files.value_key(r, kind)) in a.secrets
            ]
            if files and self._tg is not None:
                self._tg.create_task(self._rewrite(a.replica_id, files))

    async def _rewrite(self, rid: str, files: list[tuple[str, bytes, int]]) -> None:
        root = self.secrets_root
        for name, value, mode in files:
            f = root / rid / name if root is not None else None
            if f is not None and f.exists():
                try:
                    await asyncio.to_thread(secret_files.write_file, f, value, mode)
                except OSError as e:
                    log.warning("rewriting secret %s of %s: %s", name, rid, e)

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
        if self.ledger is not None:  # gone from this node, or another version: counts anew
            self.ledger.forget(w.assigned.replica_id)
        self._start_removal(w)

    def _start_removal(self, w: ReplicaWorker) -> None:
        assert self._tg is not None
        prev = w.task

        async def removal() -> None:
            if prev is not None:  # its failure is its own; a cancel of the removal is not
                with contextlib.suppress(Exception):
                    await waits.ended(prev)
            await w.remove()
            st = self.stopped.get(w.assigned.replica_id)
            if st is not None:
                st.state, st.reason = ReplicaState.EXITED, "stopped"
                self.on_change()

        rid = w.assigned.replica_id
        coro = removal()
        try:
            t = self._tg.create_task(coro)
        except RuntimeError:
            # The group is shutting down (the agent stops): containers are left as they are
            # and the next start adopts or removes them.
            coro.close()
            return
        self._removals.add(t)
        self._removing[rid] = t

        def done(t: asyncio.Task[None]) -> None:
            self._removals.discard(t)
            if self._removing.get(rid) is t:
                del self._removing[rid]

        t.add_done_callback(done)

    async def _drop_volumes(self, a: Assigned) -> None:
        """Delete a replica's volumes once its container is gone (``delete --volumes``)."""
        pending = self._removing.get(a.replica_id)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        if self.volumes_root is not None:
            try:
                await volumes.drop(self.volume_store, self.volumes_root, a.workload, a.replica_id)
            except CloudlessError as e:
                log.warning("deleting the volumes of %s: %s", a.replica_id, e)
                self._dropping.discard(a.replica_id)  # the next assignment tries again
                return
            log.info("deleted the volumes of %s (workload deleted with its volumes)", a.replica_id)

    async def _measure_volumes(self) -> None:
        """Every ``VOLUME_USAGE_S``, the disk use of each running replica's volumes (rounded
        up to MiB, so the record changes rarely); it goes with the next heartbeat."""
        while True:
            await self.clock.sleep(VOLUME_USAGE_S)
            root = self.volumes_root
            for w in list(self.workers.values()):
                a = w.assigned
                if root is not None and a.spec.volumes:
                    used = await asyncio.to_thread(
                        volumes.usage, root, a.workload, a.replica_id, a.spec
                    )
                    w.status.volume_bytes = {n: -(-b // MIB) * MIB for n, b in used.items()}

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
