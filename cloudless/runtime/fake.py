"""An in-memory runtime for tests and simulations, in the style of Nomad's mock driver.

Behaviour is configured per container id, per image ref, or by default, with ``FakeBehavior``
knobs (``run_for``, ``exit_code``, ``start_error``, ``pull_delay``, ``oom_after``,
``ignore_sigterm`` …). Time comes from an injected ``Clock``: with ``FakeClock`` a container with
``run_for=5`` exits when the test advances the clock by 5 s, and its exit is pushed on
``exits()`` while ``run()`` is running.

Containers live on a ``FakeHost`` (the "machine"); a second ``FakeRuntime`` built on the same
host models an agent restart, and its ``recover()`` finds the survivors.

Example (a test)::

    clock = FakeClock()
    rt = FakeRuntime(clock, by_image={"web:1": FakeBehavior(run_for=5, exit_code=3)})
    async with asyncio.TaskGroup() as tg:
        tg.create_task(rt.run())
        exits = rt.exits()
        await rt.pull_image("web:1")
        await rt.create_container(ContainerSpec(id="w1", image="web:1"))
        await rt.start_container("w1")
        await clock.run_for(5.1)
        assert (await anext(exits)).exit_code == 3
        ...
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field

from cloudless.lib.clock import Clock
from cloudless.lib.waits import ended
from cloudless.runtime._exits import ExitBroadcaster
from cloudless.runtime.errors import (
    ContainerExists,
    ContainerNotFound,
    ImageNotFound,
    ImageNotPulled,
    InvalidState,
    RegistryUnauthorized,
    StartFailed,
)
from cloudless.runtime.logs import read_logs
from cloudless.runtime.oci.reference import parse_reference
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
    PullProgress,
    RegistryAuth,
    check_container_id,
)

SIGKILL_EXIT = 137  # 128 + 9
SIGTERM_EXIT = 143  # 128 + 15


@dataclass(frozen=True)
class FakeBehavior:
    """How a fake container (or pull) behaves.

    * ``run_for``: seconds from start until it exits by itself with ``exit_code`` (None: never).
    * ``start_error``: ``start_container`` raises ``StartFailed`` with this message.
    * ``oom_after``: seconds from start until it is OOM-killed (exit 137, ``oom_killed``).
    * ``ignore_sigterm``: ``stop_container`` must wait out its timeout, then SIGKILL (137).
    * ``sigterm_exit_code``: exit code when it does obey SIGTERM (a shell trap may exit 0).
    * ``pull_delay`` / ``pull_error`` / ``image_size``: how pulling its image goes.
    * ``stdout`` / ``stderr``: bytes it writes when started.
    * ``memory_bytes`` / ``cpu_millicores`` / ``disk_write_bps`` / ``net_rx_bps``: what
      ``container_stats`` reports while running (counters grow at these rates).
    * ``exec``: what ``exec_in_container`` does, given the command: a ``FakeExec`` (default:
      exit 0 at once). The callable may read test state, so one behaviour can turn unhealthy.
    """

    run_for: float | None = None
    exit_code: int = 0
    start_error: str | None = None
    oom_after: float | None = None
    ignore_sigterm: bool = False
    sigterm_exit_code: int = SIGTERM_EXIT
    pull_delay: float = 0.0
    pull_error: Exception | None = None
    image_size: int = 1_000_000
    stdout: bytes = b""
    stderr: bytes = b""
    memory_bytes: int = 10 * 1024 * 1024
    cpu_millicores: int = 100
    disk_write_bps: int = 0
    net_rx_bps: int = 0  # 0: shares the host network (not measured, -1 in the stats)
    exec: Callable[[tuple[str, ...]], FakeExec] | None = None


@dataclass(frozen=True)
class FakeExec:
    """One exec's outcome: ``duration`` seconds of (clock) time, then ``exit_code``."""

    exit_code: int = 0
    output: str = ""
    duration: float = 0.0


@dataclass
class _FakeContainer:
    spec: ContainerSpec
    behavior: FakeBehavior
    created_at: float
    state: ContainerState = ContainerState.CREATED
    pid: int | None = None
    started_mono: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    logs: dict[LogStream, bytearray] = field(
        default_factory=lambda: {LogStream.STDOUT: bytearray(), LogStream.STDERR: bytearray()}
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    #: (time, size after the write) for every write, per stream: exact ``since=<time>``.
    marks: dict[LogStream, list[tuple[float, int]]] = field(
        default_factory=lambda: {LogStream.STDOUT: [], LogStream.STDERR: []}
    )

    def write(self, stream: LogStream, data: bytes, now: float) -> None:
        if data:
            self.logs[stream] += data
            self.marks[stream].append((now, len(self.logs[stream])))
            self.changed.set()

    def offset_at(self, stream: LogStream, when: float) -> int:
        """Size after the last write strictly before ``when``."""
        return max((size for ts, size in self.marks[stream] if ts < when), default=0)

    def deadline(self) -> tuple[float, bool] | None:
        """(monotonic time of the self-inflicted exit, is it an OOM kill), if any."""
        if self.state is not ContainerState.RUNNING:
            return None
        b = self.behavior
        options = []
        if b.run_for is not None:
            options.append((self.started_mono + b.run_for, False))
        if b.oom_after is not None:
            options.append((self.started_mono + b.oom_after, True))
        return min(options) if options else None

    def status(self) -> ContainerStatus:
        return ContainerStatus(
            id=self.spec.id,
            image=self.spec.image,
            state=self.state,
            labels=self.spec.all_labels(),
            pid=self.pid,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class FakeHost:
    """The machine a fake runtime manages: pulled images and containers outlive the runtime."""

    def __init__(self, images: Collection[str] | None = None) -> None:
        #: Refs a registry would serve; None means every ref exists.
        self.registry: set[str] | None = set(images) if images is not None else None
        #: Registry hosts that want credentials, and the ones they accept.
        self.registry_auth: dict[str, RegistryAuth] = {}
        self.images: dict[str, ImageInfo] = {}
        self.containers: dict[str, _FakeContainer] = {}
        self.next_pid = 1000
        self.pull_count = 0
        self.exec_count = 0


class FakeRuntime:
    """Implements ``ContainerRuntime`` in memory. See the module docstring for the knobs."""

    def __init__(
        self,
        clock: Clock,
        *,
        default: FakeBehavior | None = None,
        by_image: dict[str, FakeBehavior] | None = None,
        by_container: dict[str, FakeBehavior] | None = None,
        host: FakeHost | None = None,
    ) -> None:
        self.clock = clock
        self.default = default or FakeBehavior()
        self.by_image = dict(by_image or {})
        self.by_container = dict(by_container or {})
        self.host = host or FakeHost()
        self._exits = ExitBroadcaster()
        self._changed = asyncio.Event()
        self._pulls: dict[str, asyncio.Future[ImageInfo]] = {}

    # -- configuration -------------------------------------------------------------------

    def behavior_for(self, container_id: str, image: str) -> FakeBehavior:
        return self.by_container.get(container_id) or self.by_image.get(image) or self.default

    # -- the long-lived loop -------------------------------------------------------------

    async def run(self) -> None:
        """Fire timed exits as the clock reaches them; returns only when cancelled."""
        while True:
            self._settle()
            self._changed.clear()
            deadlines = [d[0] for c in self.host.containers.values() if (d := c.deadline())]
            waiters: list[asyncio.Task[object]] = [asyncio.create_task(self._changed.wait())]
            if deadlines:
                delay = max(0.0, min(deadlines) - self.clock.monotonic())
                waiters.append(asyncio.create_task(self.clock.sleep(delay)))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    await ended(w)

    def _settle(self) -> None:
        now = self.clock.monotonic()
        for c in self.host.containers.values():
            d = c.deadline()
            if d and d[0] <= now:
                oom = d[1]
                self._finish(c, SIGKILL_EXIT if oom else c.behavior.exit_code, oom=oom)

    def _finish(self, c: _FakeContainer, code: int, *, oom: bool = False) -> None:
        c.state = ContainerState.EXITED
        c.exit_code = code
        c.oom_killed = oom
        c.pid = None
        c.finished_at = self.clock.now()
        c.changed.set()
        self._exits.publish(ContainerExit(c.spec.id, code, oom, c.finished_at))
        self._changed.set()

    def _get(self, container_id: str) -> _FakeContainer:
        check_container_id(container_id)
        self._settle()
        c = self.host.containers.get(container_id)
        if c is None:
            raise ContainerNotFound(container_id)
        return c

    # -- images --------------------------------------------------------------------------

    async def pull_image(
        self,
        ref: str,
        progress: ProgressCallback | None = None,
        *,
        auth: RegistryAuth | None = None,
    ) -> ImageInfo:
        self._check_auth(ref, auth)
        if ref in self.host.images:
            info = self.host.images[ref]
            if progress:
                progress(PullProgress(ref, info.size_bytes, info.size_bytes))
            return info
        shared = self._pulls.get(ref)
        if shared is not None:
            return await asyncio.shield(shared)
        fut: asyncio.Future[ImageInfo] = asyncio.get_running_loop().create_future()
        self._pulls[ref] = fut
        try:
            info = await self._do_pull(ref, progress)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # consumed here; waiters re-raise it
            raise
        else:
            fut.set_result(info)
            return info
        finally:
            del self._pulls[ref]

    def _check_auth(self, ref: str, auth: RegistryAuth | None) -> None:
        host = parse_reference(ref).host
        wanted = self.host.registry_auth.get(host)
        if wanted is None:
            return
        if auth is None:
            raise RegistryUnauthorized(
                f"registry {host} requires a username and password; set the workload's "
                "image_pull_secret (cloudless secret create NAME --type registry)"
            )
        if auth != wanted:
            raise RegistryUnauthorized(
                f"registry {host} refused access to {ref} (HTTP 401); check the password of "
                f"user {auth.username!r} for this registry"
            )

    async def _do_pull(self, ref: str, progress: ProgressCallback | None) -> ImageInfo:
        b = self.by_image.get(ref) or self.default
        self.host.pull_count += 1
        if progress:
            progress(PullProgress(ref, 0, b.image_size))
        if b.pull_delay:
            await self.clock.sleep(b.pull_delay)
        if b.pull_error is not None:
            raise b.pull_error
        if self.host.registry is not None and ref not in self.host.registry:
            raise ImageNotFound(f"image {ref!r} not found in its registry; check name and tag")
        info = ImageInfo(ref, "sha256:" + hashlib.sha256(ref.encode()).hexdigest(), b.image_size)
        self.host.images[ref] = info
        if progress:
            progress(PullProgress(ref, b.image_size, b.image_size))
        return info

    # -- containers ----------------------------------------------------------------------

    async def create_container(self, spec: ContainerSpec) -> ContainerStatus:
        spec.validate()
        if spec.id in self.host.containers:
            raise ContainerExists(spec.id)
        if spec.image not in self.host.images:
            raise ImageNotPulled(spec.image)
        c = _FakeContainer(spec, self.behavior_for(spec.id, spec.image), self.clock.now())
        self.host.containers[spec.id] = c
        return c.status()

    async def start_container(self, container_id: str) -> ContainerStatus:
        c = self._get(container_id)
        if c.state is not ContainerState.CREATED:
            raise InvalidState(
                f"container {container_id!r} is {c.state.value}; only a created container "
                "can be started (delete and create it again to rerun)"
            )
        if c.behavior.start_error:
            raise StartFailed(
                f"container {container_id!r} failed to start: {c.behavior.start_error}"
            )
        c.state = ContainerState.RUNNING
        c.pid = self.host.next_pid
        self.host.next_pid += 1
        c.started_mono = self.clock.monotonic()
        c.started_at = self.clock.now()
        c.write(LogStream.STDOUT, c.behavior.stdout, c.started_at)
        c.write(LogStream.STDERR, c.behavior.stderr, c.started_at)
        c.changed.set()
        self._changed.set()
        self._settle()
        return c.status()

    async def stop_container(self, container_id: str, timeout: float = 10.0) -> ContainerStatus:
        c = self._get(container_id)
        if c.state is ContainerState.CREATED:
            return c.status()
        if c.state is ContainerState.RUNNING and not c.behavior.ignore_sigterm:
            self._finish(c, c.behavior.sigterm_exit_code)
        if c.state is ContainerState.RUNNING:
            await self._wait_exit(c, timeout)
        if c.state is ContainerState.RUNNING:
            self._finish(c, SIGKILL_EXIT)
        return c.status()

    async def _wait_exit(self, c: _FakeContainer, timeout: float) -> None:
        deadline = self.clock.monotonic() + timeout
        while c.state is ContainerState.RUNNING and self.clock.monotonic() < deadline:
            c.changed.clear()
            waiters = [
                asyncio.create_task(c.changed.wait()),
                asyncio.create_task(self.clock.sleep(deadline - self.clock.monotonic())),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            self._settle()

    async def delete_container(self, container_id: str) -> None:
        c = self._get(container_id)
        if c.state is ContainerState.RUNNING:
            self._finish(c, SIGKILL_EXIT)
        del self.host.containers[container_id]

    async def get_container(self, container_id: str) -> ContainerStatus:
        return self._get(container_id).status()

    async def list_containers(self) -> list[ContainerStatus]:
        self._settle()
        return [c.status() for c in sorted(self.host.containers.values(), key=lambda c: c.spec.id)]

    async def container_stats(self, container_id: str) -> ContainerStats:
        c = self._get(container_id)
        if c.state is not ContainerState.RUNNING:
            raise InvalidState(f"container {container_id!r} is not running; it has no live stats")
        elapsed = self.clock.monotonic() - c.started_mono
        return ContainerStats(
            id=container_id,
            cpu_ns=int(c.behavior.cpu_millicores * 1_000_000 * elapsed),
            memory_bytes=c.behavior.memory_bytes,
            memory_limit_bytes=c.spec.memory_bytes,
            pids=1,
            timestamp=self.clock.now(),
            disk_write_bytes=int(c.behavior.disk_write_bps * elapsed),
            net_rx_bytes=int(c.behavior.net_rx_bps * elapsed) if c.behavior.net_rx_bps else -1,
            net_tx_bytes=0 if c.behavior.net_rx_bps else -1,
        )

    async def stats_all(self) -> list[ContainerStats]:
        self._settle()
        running = [
            c.spec.id
            for c in sorted(self.host.containers.values(), key=lambda c: c.spec.id)
            if c.state is ContainerState.RUNNING
        ]
        return [await self.container_stats(cid) for cid in running]

    async def exec_in_container(
        self, container_id: str, command: Sequence[str], timeout: float = 10.0
    ) -> ExecResult:
        c = self._get(container_id)
        if c.state is not ContainerState.RUNNING:
            raise InvalidState(
                f"container {container_id!r} is {c.state.value}; commands run only in a "
                "running container"
            )
        self.host.exec_count += 1
        fx = c.behavior.exec(tuple(command)) if c.behavior.exec else FakeExec()
        if fx.duration > timeout:
            await self.clock.sleep(timeout)
            return ExecResult(-1, "", timed_out=True)
        if fx.duration:
            await self.clock.sleep(fx.duration)
        return ExecResult(fx.exit_code, fx.output)

    def container_logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: LogCursor | float | None = None,
    ) -> AsyncIterator[LogLine]:
        c = self._get(container_id)
        if isinstance(since, int | float):
            since = LogCursor(
                c.offset_at(LogStream.STDOUT, since), c.offset_at(LogStream.STDERR, since)
            )
        src = _FakeLogs(self, c)
        return read_logs(src, follow=follow, tail=tail, since=since)

    async def recover(self) -> list[ContainerStatus]:
        return [s for s in await self.list_containers() if s.labels.get(LABEL_MANAGED) == "true"]

    def exits(self) -> AsyncIterator[ContainerExit]:
        return self._exits.subscribe()

    async def close(self) -> None:
        return None

    # -- test helpers --------------------------------------------------------------------

    def write_log(self, container_id: str, stream: LogStream, data: bytes) -> None:
        """Append output as if the container had written it."""
        self.host.containers[container_id].write(stream, data, self.clock.now())

    def kill_externally(self, container_id: str, exit_code: int = SIGKILL_EXIT) -> None:
        """The container dies for a reason outside the agent (someone ran ``kill``)."""
        self._finish(self.host.containers[container_id], exit_code)


@dataclass
class _FakeLogs:
    rt: FakeRuntime
    c: _FakeContainer

    def size(self, stream: LogStream) -> int:
        return len(self.c.logs[stream])

    def read(self, stream: LogStream, offset: int, limit: int) -> bytes:
        return bytes(self.c.logs[stream][offset : offset + limit])

    async def finished(self) -> bool:
        self.rt._settle()
        return self.c.state is ContainerState.EXITED

    async def wait(self) -> None:
        self.c.changed.clear()
        await self.c.changed.wait()


__all__ = ["SIGKILL_EXIT", "SIGTERM_EXIT", "FakeBehavior", "FakeExec", "FakeHost", "FakeRuntime"]
