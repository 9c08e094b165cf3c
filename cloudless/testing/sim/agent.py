"""A simulated node: the real agent (``Supervisor`` and ``Link``) on a fake runtime, linked
to the coordinators through the in-memory transport, and the faults a node can suffer."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudless.agent.identity import AgentIdentity
from cloudless.agent.link import AssignmentFile, Link, Sample, assignments_from_pb
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock
from cloudless.lib.waits import ended
from cloudless.model.node import Node, NodeConditions
from cloudless.model.resources import Resources
from cloudless.runtime.fake import FakeBehavior, FakeHost, FakeRuntime
from cloudless.runtime.types import ContainerState
from cloudless.transport.channel import AgentEnd, Dialer, Refused
from cloudless.transport.memory import MemoryConnection, MemoryDialer

if TYPE_CHECKING:
    from cloudless.testing.sim.cluster import SimCluster


@dataclass
class AgentStats:
    """What crossed this agent's link (counted at the agent's end of the channel)."""

    sessions: int = 0  # sessions that got a heartbeat ack
    heartbeats: int = 0  # heartbeats sent
    intervals: list[float] = field(default_factory=list)  # every new interval_s acked
    refused: str = ""  # the last refusal's message


class PausableClock:
    """The agent process's view of time: sleeps do not end while the process is frozen."""

    def __init__(self, inner: Clock) -> None:
        self.inner = inner
        self.thawed = asyncio.Event()
        self.thawed.set()

    def now(self) -> float:
        return self.inner.now()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
        await self.thawed.wait()


class MemoryAssignmentFile(AssignmentFile):
    """The agent's assignments file, kept in memory (survives a restart of the process)."""

    def __init__(self) -> None:
        self.path = Path("<memory>")
        self.saved: list[Assigned] = []

    def save(self, msg: pb.Assignments) -> None:
        self.saved = assignments_from_pb(msg)

    def load(self) -> list[Assigned]:
        return list(self.saved)


class _TappedEnd(AgentEnd):
    """The agent's end of a channel, counted into ``AgentStats``."""

    def __init__(self, inner: AgentEnd, stats: AgentStats) -> None:
        self.inner = inner
        self.stats = stats
        self.acked = False

    async def send(self, msg: pb.AgentMessage) -> None:
        await self.inner.send(msg)
        if msg.WhichOneof("kind") == "heartbeat":
            self.stats.heartbeats += 1

    async def receive(self) -> pb.CoordinatorMessage:
        try:
            msg = await self.inner.receive()
        except Refused as e:
            self.stats.refused = e.message
            raise
        if msg.WhichOneof("kind") == "ack":
            if not self.acked:
                self.acked = True
                self.stats.sessions += 1
            if msg.ack.interval_s > 0:
                interval = min(max(msg.ack.interval_s, 0.05), 60.0)  # as Link takes it
                if not self.stats.intervals or self.stats.intervals[-1] != interval:
                    self.stats.intervals.append(interval)
        return msg

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TappedDialer(Dialer):
    def __init__(self, inner: MemoryDialer, stats: AgentStats) -> None:
        self.inner = inner
        self.stats = stats

    @contextlib.asynccontextmanager
    async def connect(self, target: str) -> AsyncIterator[AgentEnd]:
        async with self.inner.connect(target) as end:
            yield _TappedEnd(end, self.stats)


class SimAgent:
    """A node: the real supervisor and link over a fake runtime on a ``FakeHost``."""

    def __init__(self, cluster: SimCluster, node: Node, behavior: FakeBehavior) -> None:
        self.cluster = cluster
        self.clock = cluster.clock
        self.node = node
        self.node_id = node.id
        self.host = FakeHost()
        self.default = behavior
        self.by_image: dict[str, FakeBehavior] = {}
        self.by_container: dict[str, FakeBehavior] = {}
        self.rng = random.Random(cluster.rng.getrandbits(32))
        self.assignments = MemoryAssignmentFile()
        self.dialer = cluster.network.dialer(node.id)
        self.process_clock = PausableClock(cluster.clock)
        self.runtime: FakeRuntime | None = None
        self.supervisor: Supervisor | None = None
        self.link: Link | None = None
        self.task: asyncio.Task[None] | None = None
        self.stats = AgentStats()
        self.frozen_until = -1.0
        self.partitioned = False

    # -- process -----------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def connected(self) -> bool:
        """The link has a session that the coordinator answers."""
        return self.link is not None and self.link.connected.is_set()

    @property
    def leader_hint(self) -> str | None:
        return None if self.link is None else self.link.leader_hint

    @property
    def saved(self) -> list[Assigned]:
        """The agent's assignments file."""
        return self.assignments.saved

    def start(self) -> None:
        """Start the agent process (a new runtime, supervisor and link on this host)."""
        if self.up:
            raise RuntimeError(f"agent {self.node_id} is already running")
        self.runtime = FakeRuntime(
            self.clock,
            default=self.default,
            by_image=self.by_image,
            by_container=self.by_container,
            host=self.host,
        )
        link_ref: list[Link] = []
        self.supervisor = Supervisor(
            self.runtime,
            self.clock,
            lambda: link_ref[0].on_change() if link_ref else None,
            volumes_root=Path(self.cluster.volumes.name) / self.node_id,
        )
        identity = AgentIdentity(
            self.node_id, b"", b"", b"", coordinators=[b.name for b in self.cluster.brains]
        )
        self.link = Link(
            identity,
            self.supervisor,
            self.runtime,
            pb.NodeFacts,
            lambda: Sample(Resources(), NodeConditions()),
            self.process_clock,
            self.rng,
            self.assignments,
            backoff=Backoff(base=0.2, cap=5.0),
            dialer=_TappedDialer(self.dialer, self.stats),
        )
        link_ref.append(self.link)
        self.task = self.cluster.spawn(self._process(), f"agent {self.node_id}")

    async def _process(self) -> None:
        assert self.runtime and self.supervisor and self.link
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.runtime.run())
            tg.create_task(self.supervisor.run(self.assignments.load()))
            tg.create_task(self.link.run())

    async def kill(self) -> None:
        """The agent process dies: the kernel closes its stream; containers stay on the host."""
        if self.task is not None:
            await ended(self.task)
        self.task = None

    async def crash_host(self) -> None:
        """The machine dies: the process, and every container on it."""
        await self.kill()
        self.host.containers.clear()

    async def restart(self) -> None:
        """Restart the agent process; the new supervisor adopts the running containers."""
        await self.kill()
        self.start()

    # -- faults of the link --------------------------------------------------------------------

    def _connections(self) -> list[MemoryConnection]:
        return list(self.dialer.connections)

    def freeze(self, seconds: float) -> None:
        """The agent process stops for ``seconds``: its link neither sends nor reads (the
        supervisor goes on). Its host still acknowledges TCP, so the coordinator's transport
        closes the stream only if the freeze outlasts the keepalive PING timeout
        (``Keepalive.frozen_detected_at``)."""
        now = self.clock.monotonic()
        self.frozen_until = now + seconds
        self.process_clock.thawed.clear()
        for c in self._connections():
            c.hold()
            at = self.cluster.keepalive.frozen_detected_at(c.last_read, now)
            if self.frozen_until > at:
                self._later(at, lambda c=c, at=at: self.frozen_until > at and c.vanish())  # type: ignore[misc]
        self._later(self.frozen_until, self._thaw)

    def _thaw(self) -> None:
        if self.clock.monotonic() + 1e-9 >= self.frozen_until:
            self.process_clock.thawed.set()
            for c in self._connections():
                c.release()

    def partition(self) -> None:
        """Cut the link without a FIN: nothing more crosses it and new connections fail;
        the supervisor goes on running containers. The coordinator's transport closes the
        stream once a keepalive PING goes unacknowledged (``Keepalive.cut_detected_at``)."""
        self.partitioned = True
        self.dialer.unreachable = True
        now = self.clock.monotonic()
        for c in self._connections():
            c.cut()
            at = self.cluster.keepalive.cut_detected_at(c.last_read, now)
            self._later(at, c.break_coordinator_end)

    def heal(self) -> None:
        """The link is back: the agent's next connection attempt gets through."""
        self.partitioned = False
        self.dialer.unreachable = False

    def _later(self, at: float, fn: Callable[[], object]) -> None:
        async def run() -> None:
            await self.clock.sleep(max(0.0, at - self.clock.monotonic()))
            fn()

        self.cluster.spawn(run(), f"link fault of {self.node_id}")

    def set_behavior(
        self, behavior: FakeBehavior, *, image: str | None = None, container: str | None = None
    ) -> None:
        """How this host's containers (of ``image``, or one ``container``) behave from now on."""
        if container is not None:
            self.by_container[container] = behavior
        elif image is not None:
            self.by_image[image] = behavior
        else:
            self.default = behavior
        if self.runtime is not None:  # it keeps its own copies of the tables
            self.runtime.default = self.default
            self.runtime.by_image.update(self.by_image)
            self.runtime.by_container.update(self.by_container)

    # -- observation ---------------------------------------------------------------------------

    @property
    def starts(self) -> int:
        """Containers started on this host so far (each start takes a new pid)."""
        return self.host.next_pid - 1000

    def running(self) -> dict[str, str]:
        """Containers running on this host: id (== replica id) -> workload."""
        return {
            cid: c.spec.workload_id
            for cid, c in sorted(self.host.containers.items())
            if c.state is ContainerState.RUNNING
        }
