"""``ContainerdRuntime``: the ``ContainerRuntime`` protocol on containerd's gRPC API.

Lifecycle mapping: a Cloudless container is a containerd *container* record (spec, labels,
snapshot key = id) plus, once started, a *task* (runc via ``io.containerd.runc.v2``). A task is
kept after it exits so its exit status stays readable, and is deleted by ``delete_container``,
which always goes kill -> wait -> delete task -> delete container -> remove snapshot, so no
running task is ever orphaned. Exits arrive from the Events service (``/tasks/exit``,
``/tasks/oom``) in ``run()``; a reconcile pass after every (re)subscribe and every few seconds
catches exits that happened while containerd or the agent was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, empty_pb2  # type: ignore[import-untyped]

from cloudless.api.gen.containerd.services.containers.v1 import containers_pb2 as cpb
from cloudless.api.gen.containerd.services.snapshots.v1 import snapshots_pb2
from cloudless.api.gen.containerd.services.tasks.v1 import tasks_pb2
from cloudless.api.gen.containerd.types.task import task_pb2
from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.errors import NotFound
from cloudless.runtime._exits import ExitBroadcaster
from cloudless.runtime.containerd import events, io_accounting
from cloudless.runtime.containerd.client import AlreadyExists, ContainerdClient, map_error
from cloudless.runtime.containerd.execs import Execs
from cloudless.runtime.containerd.images import ImageStore
from cloudless.runtime.containerd.leases import CreateLease
from cloudless.runtime.containerd.logfiles import FileLogSource, LogFiles
from cloudless.runtime.containerd.pull import Puller
from cloudless.runtime.containerd.stats import decode_metrics, net_counters
from cloudless.runtime.containerd.status import LABEL_IMAGE, to_status
from cloudless.runtime.errors import (
    ContainerExists,
    ContainerNotFound,
    ImageNotPulled,
    InvalidState,
    RuntimeFailure,
    StartFailed,
)
from cloudless.runtime.logs import read_logs
from cloudless.runtime.oci.distribution import DistributionClient, RegistryConfig
from cloudless.runtime.oci.image import go_arch
from cloudless.runtime.oci.spec import SPEC_TYPE_URL, build_runtime_spec
from cloudless.runtime.types import (
    LABEL_MANAGED,
    ContainerExit,
    ContainerSpec,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    ExecResult,
    ImageInfo,
    LogCursor,
    LogLine,
    LogStream,
    ProgressCallback,
    RegistryAuth,
    check_container_id,
)

log = logging.getLogger("cloudless.runtime.containerd")

RUNC_V2 = "io.containerd.runc.v2"
_KILL_WAIT = 10.0


def _with_net(stats: ContainerStats, pid: int) -> ContainerStats:
    counters = net_counters(pid) if pid else None
    if counters is None:
        return stats
    return replace(stats, net_rx_bytes=counters[0], net_tx_bytes=counters[1])


class ContainerdRuntime:
    """Talks to containerd at ``address`` in ``namespace``; keeps logs under ``data_dir``.

    ``run()`` must run (in the agent's TaskGroup) for exits to be pushed on ``exits()``.
    A container joins the network namespace its spec names (``netns``), else the host's.
    """

    def __init__(
        self,
        address: str,
        *,
        data_dir: Path | str,
        namespace: str = "cloudless",
        registry: RegistryConfig | None = None,
        clock: Clock | None = None,
        snapshotter: str = "overlayfs",
        cgroup_parent: str = "/cloudless",
        log_max_bytes: int = 16 << 20,
        arch: str | None = None,
        reconcile_every: float = 5.0,
        shim_group: str = "",
        count_block_io: bool = True,
    ) -> None:
        self.clock = clock or SystemClock()
        self.count_block_io = count_block_io
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.cgroup_parent = cgroup_parent.rstrip("/")
        self.reconcile_every = reconcile_every
        self.shim_group = shim_group
        self.client = ContainerdClient(address, namespace)
        self.dist = DistributionClient(registry)
        arch = arch or go_arch()
        self.puller = Puller(
            self.client, self.dist, snapshotter=snapshotter, arch=arch, now=self.clock.now
        )
        self.images = ImageStore(self.client, arch)
        self.logs = LogFiles(Path(data_dir) / "logs" / namespace, log_max_bytes)
        self._exits = ExitBroadcaster()
        self._running: dict[str, int] = {}  # started by us or adopted: an exit is still due
        self._oom: set[str] = set()
        self._started_at: dict[str, float] = {}
        self._lease = CreateLease(self.client, self.clock)
        self._fresh: dict[str, tuple[Any, list[Any]]] = {}  # created here, not yet started
        self._execs = Execs(self.client, self.logs.dir)

    async def version(self, timeout: float = 5.0) -> str:
        """containerd's version (``"1.6.20~ds1"``); ``RuntimeUnavailable`` if it does not answer
        within ``timeout`` seconds. A cheap health check for the agent's node report."""
        c = self.client
        resp = await c.call(c.version.Version, empty_pb2.Empty(), "version", timeout=timeout)
        return str(resp.version)

    # -- images --------------------------------------------------------------------------

    async def pull_image(
        self,
        ref: str,
        progress: ProgressCallback | None = None,
        *,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        return await self.puller.pull(ref, progress, auth)

    # -- lifecycle -----------------------------------------------------------------------

    def cgroups_path(self, container_id: str) -> str:
        """``/cloudless/<namespace>/<id>``: ids are unique per namespace, not per host."""
        return f"{self.cgroup_parent}/{self.namespace}/{container_id}"

    async def create_container(self, spec: ContainerSpec) -> ContainerStatus:
        spec.validate()
        name, config, chain = await self.images.resolve(spec.image)
        oci = build_runtime_spec(
            spec, config, cgroups_path=self.cgroups_path(spec.id), shim_group=self.shim_group
        )
        c = self.client
        lease = await self._lease.get()
        try:
            prepared = await c.call(
                c.snapshots.Prepare,
                snapshots_pb2.PrepareSnapshotRequest(
                    snapshotter=self.snapshotter, key=spec.id, parent=chain
                ),
                f"prepare rootfs of {spec.id}",
                lease=lease,
            )
        except NotFound as e:
            if not await self._lease.exists(lease):
                self._lease.forget()  # our lease vanished (expired or removed): take a new one
                return await self.create_container(spec)
            raise ImageNotPulled(spec.image) from e
        except AlreadyExists:
            if await self._container(spec.id, missing_ok=True) is not None:
                raise ContainerExists(spec.id) from None
            # A leftover from a create that died half-way: start from a clean snapshot.
            await self._remove_snapshot(spec.id)
            return await self.create_container(spec)
        record = cpb.Container(
            id=spec.id,
            labels={**spec.all_labels(), LABEL_IMAGE: spec.image},
            image=name,
            runtime=cpb.Container.Runtime(name=RUNC_V2),
            spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=json.dumps(oci).encode()),
            snapshotter=self.snapshotter,
            snapshot_key=spec.id,
        )
        try:
            resp = await c.call(
                c.containers.Create,
                cpb.CreateContainerRequest(container=record),
                f"create container {spec.id}",
                lease=lease,
            )
        except AlreadyExists:
            raise ContainerExists(spec.id) from None
        except BaseException:
            await self._remove_snapshot(spec.id)
            raise
        self.logs.create(spec.id)
        # Remember what start needs (record and rootfs mounts) to save it three round trips.
        self._fresh[spec.id] = (resp.container, list(prepared.mounts))
        return self._status(resp.container, None)

    async def start_container(self, container_id: str) -> ContainerStatus:
        check_container_id(container_id)
        c = self.client
        fresh = self._fresh.pop(container_id, None)
        if fresh is not None:
            # Created by this runtime and never started: no task can exist yet (if one does,
            # Tasks.Create says so and we take the careful path below).
            record, mounts = fresh
            try:
                await self._create_task(container_id, record, mounts)
            except AlreadyExists:
                fresh = None
        if fresh is None:
            record, proc = await asyncio.gather(
                self._container(container_id), self._task(container_id)
            )
            if proc is not None and proc.status != task_pb2.CREATED:
                state = self._status(record, proc).state.value
                raise InvalidState(
                    f"container {container_id!r} is {state}; only a created container can be "
                    "started (delete and create it again to rerun)"
                )
            if proc is None:
                resp = await c.call(
                    c.snapshots.Mounts,
                    snapshots_pb2.MountsRequest(
                        snapshotter=self.snapshotter, key=record.snapshot_key
                    ),
                    f"rootfs mounts of {container_id}",
                )
                await self._create_task(container_id, record, list(resp.mounts))
        self._running[container_id] = 0
        self.logs.checkpoint(container_id, self.clock.now(), force=True)
        try:
            started = await c.call(
                c.tasks.Start,
                tasks_pb2.StartRequest(container_id=container_id),
                f"start {container_id}",
            )
        except Exception as e:
            self._running.pop(container_id, None)
            await self._delete_task(container_id)
            raise StartFailed(events.explain_start_failure(container_id, record, str(e))) from None
        if container_id in self._running:
            self._running[container_id] = started.pid
        now = self.clock.now()
        self._started_at[container_id] = now
        return replace(
            self._status(record, None),
            state=ContainerState.RUNNING,
            pid=started.pid,
            started_at=now,
        )

    async def stop_container(self, container_id: str, timeout: float = 10.0) -> ContainerStatus:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the whole container."""
        check_container_id(container_id)
        await self._container(container_id)
        proc = await self._task(container_id)
        if proc is not None and proc.status in (
            task_pb2.RUNNING,
            task_pb2.PAUSED,
            task_pb2.CREATED,
        ):
            await self._kill(container_id, signal.SIGTERM, all_=False)
            if not await self._wait(container_id, timeout):
                await self._kill(container_id, signal.SIGKILL, all_=True)
                await self._wait(container_id, _KILL_WAIT)
        return await self.get_container(container_id)

    async def delete_container(self, container_id: str) -> None:
        """Kill -> wait -> delete task -> delete container -> remove snapshot -> drop logs."""
        check_container_id(container_id)
        c = self.client
        record = await self._container(container_id)
        proc = await self._task(container_id)
        if proc is not None and proc.status != task_pb2.STOPPED:
            await self._kill(container_id, signal.SIGKILL, all_=True)
            await self._wait(container_id, _KILL_WAIT)
        if proc is not None:
            await self._delete_task(container_id)
        with contextlib.suppress(NotFound):
            await c.call(
                c.containers.Delete,
                cpb.DeleteContainerRequest(id=container_id),
                f"delete {container_id}",
            )
        await self._remove_snapshot(record.snapshot_key or container_id)
        await asyncio.to_thread(self.logs.remove, container_id)
        self._fresh.pop(container_id, None)
        self._running.pop(container_id, None)
        self._oom.discard(container_id)
        self._started_at.pop(container_id, None)
        self._execs.forget(container_id)

    async def exec_in_container(
        self, container_id: str, command: Sequence[str], timeout: float = 10.0
    ) -> ExecResult:
        check_container_id(container_id)
        return await self._execs.run(container_id, command, timeout)

    # -- observation ---------------------------------------------------------------------

    async def get_container(self, container_id: str) -> ContainerStatus:
        check_container_id(container_id)
        record = await self._container(container_id)
        proc = await self._task(container_id)
        if proc is not None and proc.status == task_pb2.STOPPED and container_id in self._running:
            await self._on_exit(
                container_id, proc.exit_status, proc.exited_at.ToDatetime().timestamp()
            )
        return self._status(record, proc)

    async def list_containers(self) -> list[ContainerStatus]:
        c = self.client
        records = await c.call(c.containers.List, cpb.ListContainersRequest(), "list containers")
        tasks = await c.call(c.tasks.List, tasks_pb2.ListTasksRequest(), "list tasks")
        by_id = {t.id: t for t in tasks.tasks}
        out = [self._status(r, by_id.get(r.id)) for r in records.containers]
        return sorted(out, key=lambda s: s.id)

    async def container_stats(self, container_id: str) -> ContainerStats:
        check_container_id(container_id)
        await self._container(container_id)
        proc = await self._task(container_id)
        if proc is None or proc.status != task_pb2.RUNNING:
            raise InvalidState(f"container {container_id!r} is not running; it has no live stats")
        c = self.client
        resp = await c.call(
            c.tasks.Metrics, tasks_pb2.MetricsRequest(filters=[f"id=={container_id}"]), "metrics"
        )
        if not resp.metrics:
            raise InvalidState(f"container {container_id!r} has no metrics (it just exited?)")
        m = resp.metrics[0]
        stats = decode_metrics(container_id, m.data.type_url, m.data.value, self.clock.now())
        return _with_net(stats, proc.pid)

    async def stats_all(self) -> list[ContainerStats]:
        """Two calls whatever the number of containers: the task list (pids, states) and the
        metrics of every task in the namespace."""
        c = self.client
        tasks = await c.call(c.tasks.List, tasks_pb2.ListTasksRequest(), "list tasks")
        pids = {t.id: t.pid for t in tasks.tasks if t.status == task_pb2.RUNNING}
        if not pids:
            return []
        resp = await c.call(c.tasks.Metrics, tasks_pb2.MetricsRequest(), "metrics")
        now = self.clock.now()
        out = []
        for m in resp.metrics:
            if m.id in pids:
                stats = decode_metrics(m.id, m.data.type_url, m.data.value, now)
                out.append(_with_net(stats, pids[m.id]))
        return sorted(out, key=lambda s: s.id)

    async def container_logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: LogCursor | float | None = None,
    ) -> AsyncIterator[LogLine]:
        check_container_id(container_id)
        await self._container(container_id)
        if isinstance(since, int | float):
            since = LogCursor(
                self.logs.offset_at(container_id, LogStream.STDOUT, since),
                self.logs.offset_at(container_id, LogStream.STDERR, since),
            )

        async def finished() -> bool:
            proc = await self._task(container_id)
            return proc is None or proc.status in (task_pb2.STOPPED, task_pb2.UNKNOWN)

        src = FileLogSource(self.logs, container_id, finished, self.clock.sleep)
        async for line in read_logs(src, follow=follow, tail=tail, since=since):
            yield line

    async def recover(self) -> list[ContainerStatus]:
        """Adopt every managed container in the namespace; running ones get exit tracking."""
        found = [s for s in await self.list_containers() if s.labels.get(LABEL_MANAGED) == "true"]
        for s in found:
            if s.state is ContainerState.RUNNING:
                self._running[s.id] = s.pid or 0
            elif s.state is ContainerState.EXITED:
                self._running.pop(s.id, None)
        return found

    def exits(self) -> AsyncIterator[ContainerExit]:
        return self._exits.subscribe()

    async def run(self) -> None:
        """Watch exits (resubscribing across containerd restarts), reconcile, cap logs. First,
        on cgroup v1, switch on the kernel's block I/O accounting (``io_accounting``)."""
        if self.count_block_io:
            on = await asyncio.to_thread(io_accounting.enable)
            if on:
                log.info("cgroup v1: block I/O accounting switched on for %s", ", ".join(on))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(events.watch(self))
            tg.create_task(self._housekeeping())
            tg.create_task(self._index_logs())

    async def close(self) -> None:
        await self.dist.aclose()
        await self.client.close()

    # -- internals -----------------------------------------------------------------------

    async def _create_task(self, cid: str, record: Any, mounts: list[Any]) -> None:
        stdout, stderr = self.logs.create(cid)
        c = self.client
        try:
            await c.call(
                c.tasks.Create,
                tasks_pb2.CreateTaskRequest(
                    container_id=cid, rootfs=mounts, stdout=stdout, stderr=stderr
                ),
                f"create task {cid}",
            )
        except AlreadyExists:
            raise
        except NotFound:
            raise ContainerNotFound(cid) from None
        except RuntimeFailure as e:
            raise StartFailed(events.explain_start_failure(cid, record, str(e))) from None

    async def _index_logs(self, every: float = 1.0) -> None:
        """Time-index the logs of running containers (for ``container_logs(since=<time>)``)."""
        while True:
            await self.clock.sleep(every)
            now = self.clock.now()
            for cid in list(self._running):
                with contextlib.suppress(Exception):
                    self.logs.checkpoint(cid, now)

    async def _housekeeping(self) -> None:
        while True:
            await self.clock.sleep(self.reconcile_every)
            with contextlib.suppress(Exception):  # retried next round
                await self.reconcile()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.logs.enforce_cap)

    async def reconcile(self) -> None:
        """Report exits of tracked containers whose tasks stopped or vanished unseen."""
        # Only containers tracked *before* listing: one started meanwhile is not in the list
        # yet and must not be mistaken for a vanished task.
        tracked = list(self._running)
        if not tracked:
            return
        c = self.client
        tasks = await c.call(c.tasks.List, tasks_pb2.ListTasksRequest(), "list tasks")
        by_id = {t.id: t for t in tasks.tasks}
        for cid in tracked:
            t = by_id.get(cid)
            if t is None:
                await self._on_exit(cid, 255, self.clock.now())
            elif t.status == task_pb2.STOPPED:
                await self._on_exit(cid, t.exit_status, t.exited_at.ToDatetime().timestamp())

    async def _on_exit(self, cid: str, status: int, exited_at: float) -> None:
        if self._running.pop(cid, None) is None:
            return
        self.logs.checkpoint(cid, self.clock.now())
        oom = cid in self._oom or (status == 137 and await events.oom_in_metrics(self, cid))
        if oom:
            self._oom.add(cid)
            await events.mark_oom(self, cid)
        self._exits.publish(ContainerExit(cid, status, oom, exited_at or self.clock.now()))

    def _status(self, record: Any, proc: Any | None) -> ContainerStatus:
        return to_status(
            record,
            proc,
            oom_seen=record.id in self._oom,
            started_at=self._started_at.get(record.id),
        )

    async def _container(self, cid: str, *, missing_ok: bool = False) -> Any:
        c = self.client
        try:
            resp = await c.call(c.containers.Get, cpb.GetContainerRequest(id=cid), f"get {cid}")
        except NotFound:
            if missing_ok:
                return None
            raise ContainerNotFound(cid) from None
        return resp.container

    async def _task(self, cid: str) -> Any | None:
        c = self.client
        try:
            resp = await c.call(c.tasks.Get, tasks_pb2.GetRequest(container_id=cid), f"task {cid}")
        except NotFound:
            return None
        return resp.process

    async def _kill(self, cid: str, sig: int, *, all_: bool) -> None:
        c = self.client
        with contextlib.suppress(NotFound):
            await c.call(
                c.tasks.Kill,
                tasks_pb2.KillRequest(container_id=cid, signal=int(sig), all=all_),
                f"signal {cid}",
            )

    async def _wait(self, cid: str, timeout: float) -> bool:
        """True if the task exited within ``timeout`` seconds."""
        c = self.client
        try:
            await c.tasks.Wait(
                tasks_pb2.WaitRequest(container_id=cid),
                metadata=c.metadata(),
                timeout=max(0.01, timeout),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as e:
            # The server may notice the deadline first and answer UNKNOWN "context deadline
            # exceeded" instead of the client raising DEADLINE_EXCEEDED.
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline" in (e.details() or ""):
                return False
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return True
            raise map_error(e, f"wait for {cid}") from None
        return True

    async def _delete_task(self, cid: str) -> None:
        c = self.client
        with contextlib.suppress(NotFound):
            await c.call(
                c.tasks.Delete, tasks_pb2.DeleteTaskRequest(container_id=cid), f"delete task {cid}"
            )

    async def _remove_snapshot(self, key: str) -> None:
        c = self.client
        with contextlib.suppress(NotFound):
            await c.call(
                c.snapshots.Remove,
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key),
                f"remove snapshot {key}",
            )
