"""A simulated agent: the real supervisor on a fake runtime, and an in-process link."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cloudless.agent.link import assignments_from_pb, status_pb
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.dispatcher.dispatcher import Dispatcher, NotLeader, Session
from cloudless.lib.backoff import Backoff
from cloudless.lib.first import first_of
from cloudless.model.node import Node
from cloudless.runtime.fake import FakeBehavior, FakeHost, FakeRuntime
from cloudless.runtime.types import ContainerState
from cloudless.store.errors import StoreError

if TYPE_CHECKING:
    from cloudless.coordinator.sim.brain import Brain
    from cloudless.coordinator.sim.cluster import SimCluster


@dataclass
class AgentStats:
    sessions: int = 0
    heartbeats: int = 0
    intervals: list[float] = field(default_factory=list)  # every interval_s acked
    refused: str = ""


class SimAgent:
    """A node: supervisor + fake runtime on a ``FakeHost``, and an in-process link."""

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
        self.backoff = Backoff(base=0.2, cap=5.0)
        self.saved: list[Assigned] = []  # the agent's assignments file
        self.runtime: FakeRuntime | None = None
        self.supervisor: Supervisor | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: Session | None = None
        self.stats = AgentStats()
        # The coordinators' default until the first ack says otherwise: a new agent must not
        # heartbeat faster, nor give up on a busy coordinator sooner (silence_limit), than its
        # peers do.
        self.interval = 2.0
        self.last_read = 0.0  # when the coordinator last read from this agent's stream
        self._dispatcher: Dispatcher | None = None
        self.leader_hint: str | None = None
        self.seq = 0
        self.frozen_until = -1.0
        self.partitioned = False
        self._healed = asyncio.Event()
        self._healed.set()
        self._cut = asyncio.Event()
        self._changed = False
        self._nap: asyncio.Future[None] | None = None

    def _on_change(self) -> None:
        self._changed = True
        if self._nap is not None and not self._nap.done():
            self._nap.set_result(None)

    # -- process -----------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        """Start the agent process (a new runtime and supervisor on this node's host)."""
        if self.up:
            raise RuntimeError(f"agent {self.node_id} is already running")
        self.runtime = FakeRuntime(
            self.clock,
            default=self.default,
            by_image=self.by_image,
            by_container=self.by_container,
            host=self.host,
        )
        self.supervisor = Supervisor(
            self.runtime,
            self.clock,
            self._on_change,
            volumes_root=Path(self.cluster.volumes.name) / self.node_id,
        )
        self.task = self.cluster.spawn(self._process(), f"agent {self.node_id}")

    async def _process(self) -> None:
        assert self.runtime is not None and self.supervisor is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.runtime.run())
            tg.create_task(self.supervisor.run(list(self.saved)))
            tg.create_task(self._link())

    async def kill(self) -> None:
        """The agent process dies: the kernel closes its stream; containers stay on the host."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.task = None

    async def crash_host(self) -> None:
        """The machine dies: the process, and every container on it."""
        await self.kill()
        self.host.containers.clear()

    async def restart(self) -> None:
        """Restart the agent process; the new supervisor adopts the running containers."""
        await self.kill()
        self.start()

    def freeze(self, seconds: float) -> None:
        """The process stops for ``seconds`` (no heartbeats, session left open). Its host
        still acknowledges TCP, so the transport closes the stream only if the freeze
        outlasts the keepalive PING timeout (``Keepalive.frozen_detected_at``)."""
        now = self.clock.monotonic()
        self.frozen_until = now + seconds
        s, dispatcher = self.session, self._dispatcher
        if s is not None and dispatcher is not None:
            at = self.cluster.keepalive.frozen_detected_at(self.last_read, now)
            if self.frozen_until > at:
                self._transport_closes(dispatcher, s, at, lambda: self.frozen_until > at)

    def partition(self) -> None:
        """Cut the link without a FIN: nothing more crosses it; the supervisor goes on
        running containers. The coordinator's transport closes the stream once a keepalive
        PING goes unacknowledged (``Keepalive.cut_detected_at``)."""
        self.partitioned = True
        self._healed.clear()
        s, dispatcher = self.session, self._dispatcher
        if s is not None and dispatcher is not None:
            at = self.cluster.keepalive.cut_detected_at(self.last_read, self.clock.monotonic())
            self._transport_closes(dispatcher, s, at, lambda: True)
        self._cut.set()

    def _transport_closes(
        self, dispatcher: Dispatcher, s: Session, at: float, still: Callable[[], bool]
    ) -> None:
        """The coordinator's gRPC core ends ``s`` at ``at`` if ``still()`` holds then."""

        async def close() -> None:
            await self.clock.sleep(max(0.0, at - self.clock.monotonic()))
            if not s.closed and still():
                dispatcher.close_session(s)

        self.cluster.spawn(close(), f"transport of {self.node_id}")

    def heal(self) -> None:
        self.partitioned = False
        self._cut.clear()
        self._healed.set()

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

    # -- the link ------------------------------------------------------------------------------

    async def _thawed(self) -> None:
        while (left := self.frozen_until - self.clock.monotonic()) > 0:
            await self.clock.sleep(left)

    def _targets(self) -> list[Brain]:
        """Reachable coordinators, the last known leader first (as the real link orders
        its known endpoints)."""
        up = [b for b in self.cluster.brains if b.task is not None and not b.task.done()]
        hint = [b for b in up if b.name == self.leader_hint]
        return hint + [b for b in up if b.name != self.leader_hint]

    async def _link(self) -> None:
        """Like ``Link.run``: try each coordinator in turn; a follower's redirect names the
        leader to go to next; back off with jitter after a full round of failures."""
        attempt = 0
        while True:
            await self._healed.wait()
            await self._thawed()
            for brain in self._targets():
                try:
                    s = await brain.dispatcher.open_session(self.node_id)
                except NotLeader:
                    leader = brain.election.leader()
                    if leader and leader != brain.name:
                        self.leader_hint = leader
                        break  # redirected: straight to the leader after the backoff
                    continue
                except StoreError:
                    continue  # that coordinator cannot serve: the call fails, try the next
                except PermissionError as e:
                    self.stats.refused = str(e)
                    return  # a removed node's agent stops talking
                attempt = 0
                self.leader_hint = brain.name
                self.stats.sessions += 1
                self.session, self._dispatcher = s, brain.dispatcher
                try:
                    await self._serve(brain.dispatcher, s)
                finally:
                    self.session, self._dispatcher = None, None
                    if not self.partitioned:
                        brain.dispatcher.close_session(s)
                if self.partitioned or self.frozen_until > self.clock.monotonic():
                    break
            await self.clock.sleep(self.backoff.delay(attempt, self.rng))
            attempt += 1

    async def _serve(self, dispatcher: Dispatcher, s: Session) -> None:
        """One session: Hello, then heartbeats and incoming messages, until the stream ends
        (redirect, dispatcher error) or the link is cut."""
        assert self.supervisor is not None
        now = self.clock.now()
        try:
            await dispatcher.on_hello(
                s,
                pb.Hello(
                    node_id=self.node_id,
                    replicas=[status_pb(st, now) for st in self.supervisor.statuses()],
                ),
            )
        except (NotLeader, StoreError):
            return
        self.last_read = self.clock.monotonic()
        await first_of(self._heartbeats(dispatcher, s), self._reader(s), self._cut.wait())

    async def _heartbeats(self, dispatcher: Dispatcher, s: Session) -> None:
        assert self.supervisor is not None
        while not s.closed:
            await self._thawed()
            if s.closed:
                return  # the transport ended the stream while this process was frozen
            self._changed = False
            self.seq += 1
            now = self.clock.now()
            hb = pb.Heartbeat(
                seq=self.seq,
                sent_at=now,
                replicas=[status_pb(st, now) for st in self.supervisor.statuses()],
            )
            self.last_read = self.clock.monotonic()
            try:
                ack = await dispatcher.on_heartbeat(s, hb)
            except (NotLeader, StoreError):
                return  # the stream ends; the link reconnects
            self.stats.heartbeats += 1
            if ack.interval_s > 0:
                self.interval = min(max(ack.interval_s, 0.05), 60.0)
                if not self.stats.intervals or self.stats.intervals[-1] != self.interval:
                    self.stats.intervals.append(self.interval)
            if not self._changed:  # next beat after the interval, or at once on a change
                self._nap = asyncio.get_running_loop().create_future()
                self.clock.wake(self.interval, self._nap)
                try:
                    await self._nap
                finally:
                    self._nap = None
            if self._changed:
                await self.clock.sleep(0.02)  # coalesce a burst, as the real link does

    async def _reader(self, s: Session) -> None:
        assert self.supervisor is not None
        while True:
            msg = await s.outbox.get()
            await self._thawed()
            kind = msg.WhichOneof("kind")
            if kind == "assignments":
                self.saved = assignments_from_pb(msg.assignments)
                self.supervisor.assign(list(self.saved))
            elif kind == "redirect":
                return
