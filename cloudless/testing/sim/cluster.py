"""``SimCluster``: the store, the brains and the agents on one clock, user requests,
time control and observation."""

from __future__ import annotations

import asyncio
import random
import tempfile
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from cloudless.coordinator.deciders import commands
from cloudless.coordinator.deciders.membership import MembershipConfig
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.keepalive import Keepalive
from cloudless.lib.waits import ended
from cloudless.model.node import Node, NodeState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.fake import FakeBehavior
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore
from cloudless.store.table import Record, Table
from cloudless.testing.sim.agent import SimAgent
from cloudless.testing.sim.base import SimClock, SimError
from cloudless.testing.sim.brain import Brain
from cloudless.testing.sim.view import SimView, problems
from cloudless.transport.memory import MemoryNetwork

T = TypeVar("T")

NODE_SIZE = Resources(4000, 8 << 30, 100 << 30, 10**9)


class SimCluster:
    """See the module docstring. Use as ``async with SimCluster(...) as sim:``."""

    def __init__(
        self,
        *,
        coordinators: int = 1,
        membership: MembershipConfig | None = None,
        seed: int = 0,
        step_s: float = 0.05,
        exact: bool = True,
        election_ttl: int = 5,
        keepalive: Keepalive | None = None,
    ) -> None:
        """``exact``: step the clock to every timer's deadline (timings exact to the float);
        otherwise in fixed ``step_s`` steps (cheaper with thousands of agents)."""
        self.clock = SimClock()
        self.exact = exact
        self.rng = random.Random(seed)
        self.step_s = step_s
        self.membership = membership or MembershipConfig()
        self.keepalive = keepalive or Keepalive()  # when the transport closes a silent stream
        self.store = MemoryStore(self.clock, retain_revisions=20_000)
        self.state = ClusterState(self.store)  # the harness's own, uncut, view of the store
        self.network = MemoryNetwork(self.clock)  # agents reach brains at their names
        self.brains = [self._brain(f"coord-{i}", election_ttl) for i in range(coordinators)]
        self.agents: dict[str, SimAgent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[str] = []
        self._view: tuple[int, SimView] | None = None
        #: Each host's volume directories (``<root>/<node id>``), removed with the cluster.
        self.volumes = tempfile.TemporaryDirectory(prefix="cl-sim-volumes-")

    async def __aenter__(self) -> SimCluster:
        self.spawn(self.store.run(), "store")
        for b in self.brains:
            self.start_brain(b)
        await self.until(lambda v: self.leader() is not None, within=10, what="a leader")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.volumes.cleanup()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run ``coro`` until the cluster closes; an unexpected error fails the scenario."""
        task = asyncio.create_task(coro, name=what)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                assert exc is not None
                tb = "".join(traceback.format_exception(exc))
                self._failures.append(f"{what} crashed at t={self.now:.2f}s:\n{tb}")

        task.add_done_callback(done)
        return task

    # -- brains --------------------------------------------------------------------------------

    def _brain(self, name: str, election_ttl: int) -> Brain:
        return Brain(
            name,
            self.store,
            self.clock,
            self.membership,
            random.Random(self.rng.getrandbits(32)),
            election_ttl,
            self.network,
            lambda: [b.name for b in self.brains],
        )

    def leader(self) -> Brain | None:
        for b in self.brains:
            if b.task is not None and not b.task.done() and b.leading:
                return b
        return None

    def start_brain(self, b: Brain) -> None:
        b.link.cut = False
        b.task = self.spawn(b.run(), f"brain {b.name}")

    async def crash_brain(self, b: Brain) -> None:
        """The coordinator dies without resigning: its lease lapses after the election TTL."""
        b.link.cut = True
        if b.task is not None:
            await ended(b.task)
        b.task = None

    def isolate_brain(self, b: Brain) -> None:
        """The coordinator loses the store (etcd partition) but keeps running and stays
        reachable by agents. Undo with ``b.link.cut = False``."""
        b.link.cut = True

    def replace_brain(self, b: Brain) -> Brain:
        """A crashed coordinator comes back as a fresh process (same name, empty memory)."""
        fresh = self._brain(b.name, b.election.ttl)
        self.brains[self.brains.index(b)] = fresh
        self.start_brain(fresh)
        return fresh

    def fence(self) -> Fence:
        b = self.leader()
        if b is None:
            raise SimError("no leader to take a user request\n" + self._picture())
        return b.election.fence()

    # -- agents --------------------------------------------------------------------------------

    async def add_agents(
        self,
        count: int,
        *,
        zones: Sequence[str] = ("zone-a", "zone-b", "zone-c"),
        allocatable: Resources = NODE_SIZE,
        behavior: FakeBehavior | None = None,
        start: bool = True,
        prefix: str = "node",
    ) -> list[SimAgent]:
        """Enroll ``count`` nodes (records in ``enrolling``, as ``AgentApi.Enroll`` writes
        them) and start their agents; zones are dealt round-robin."""
        out = []
        first = len(self.agents)
        for i in range(first, first + count):
            node = Node.make(
                f"{prefix}-{i:04d}",
                name=f"{prefix}{i}",
                zone=zones[i % len(zones)] if zones else "",
                region="sim",
                capacity=allocatable,
                allocatable=allocatable,
                state=NodeState.ENROLLING,
                enrolled_at=self.clock.now(),
            )
            await self.state.nodes.create(node.id, node)
            agent = SimAgent(self, node, behavior or FakeBehavior())
            self.agents[node.id] = agent
            if start:
                agent.start()
            out.append(agent)
        return out

    # -- user requests (the API's own commands, ``deciders.commands``) ------------------------

    async def _command(
        self, table: Table[T], name: str, command: Callable[[T | None], commands.Decision[T]]
    ) -> Record[T] | None:
        """Run ``command`` as the user API does: inside a fenced compare-and-swap on the
        leader; a refusal fails the scenario with its reason."""
        decided: list[commands.Decision[T]] = []

        def change(cur: T | None) -> T | None:
            decided[:] = [command(cur)]
            return decided[0].write

        rec = await table.update(name, change, fence=self.fence())
        refusal = decided[0].refused if decided else None
        if refusal is not None:
            raise SimError(f"refused ({refusal.code}): {refusal.reason}")
        return rec

    async def apply(self, spec: WorkloadSpec) -> WorkloadRecord:
        now = self.clock.now()
        rec = await self._command(
            self.state.workloads, spec.name, lambda cur: commands.apply(cur, spec, now)
        )
        assert rec is not None
        return rec.value

    async def scale(self, name: str, replicas: int) -> None:
        now = self.clock.now()
        await self._command(
            self.state.workloads, name, lambda cur: commands.scale(cur, name, replicas, now)
        )

    async def delete(self, name: str, *, volumes: bool = False) -> None:
        await self._command(
            self.state.workloads, name, lambda cur: commands.delete(cur, name, volumes=volumes)
        )

    async def set_node_state(self, node_id: str, target: NodeState) -> None:
        """Cordon (``CORDONED``), drain (``DRAINING``), uncordon (``READY``) or remove."""
        command = {
            NodeState.CORDONED: commands.cordon,
            NodeState.DRAINING: commands.drain,
            NodeState.READY: commands.uncordon,
            NodeState.REMOVED: commands.remove,
        }.get(target)
        if command is None:
            raise SimError(f"no user command moves a node to {target.value}")
        await self._command(self.state.nodes, node_id, lambda cur: command(cur, node_id))

    # -- time ----------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    async def settle_loop(self, max_rounds: int = 1000) -> None:
        """Run the event loop until no callback is ready (nothing left to do at this time)."""
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        for _ in range(max_rounds):
            await asyncio.sleep(0)
            if ready is not None and not ready:
                return

    async def _step(self, limit: float) -> None:
        """Advance to the next timer deadline (or by ``step_s``), at most to ``limit``; then
        run everything that became ready."""
        target = min(self.now + self.step_s, limit)
        if self.exact:
            due = self.clock.next_deadline()
            if due is not None:
                target = min(target, max(due, self.now))
        self.clock.advance(max(0.0, target - self.now))
        await self.settle_loop()
        self._raise_failures()

    async def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            await self._step(end)

    async def until(
        self,
        pred: Callable[[SimView], object],
        *,
        within: float,
        what: str,
        every: float = 0.1,
    ) -> float:
        """Advance time until ``pred(view)`` holds; return the simulated seconds it took.
        Fails with the cluster picture after ``within`` seconds."""
        start = self.now
        next_check = start
        while True:
            if self.now >= next_check - 1e-9:
                if pred(await self.view()):
                    return self.now - start
                next_check = self.now + every
            if self.now - start >= within:
                raise SimError(f"not within {within:g}s (simulated): {what}\n{await self._dump()}")
            limit = start + within
            if next_check > self.now:
                limit = min(limit, next_check)
            await self._step(limit)

    def _raise_failures(self) -> None:
        if self._failures:
            msg = "\n".join(self._failures)
            self._failures.clear()
            raise SimError(msg)

    # -- observation ---------------------------------------------------------------------------

    async def view(self) -> SimView:
        rev = await self.store.revision()
        containers = {nid: a.running() for nid, a in self.agents.items()}
        cut_off = {
            nid: "down" if not a.up else "partitioned"
            for nid, a in self.agents.items()
            if not a.up or a.partitioned
        }
        unconnected = frozenset(
            nid for nid, a in self.agents.items() if a.up and not a.partitioned and not a.connected
        )
        brain = self.leader()
        leader = brain.name if brain else None
        if self._view is not None and self._view[0] == rev:
            v = self._view[1]
            if (v.containers, v.cut_off, v.unconnected, v.leader) == (
                containers,
                cut_off,
                unconnected,
                leader,
            ):
                return replace(v, at=self.now)
        snap = await self.state.snapshot()
        v = SimView(
            nodes=dict(snap.view.nodes),
            workloads=dict(snap.view.workloads),
            replicas=dict(snap.view.replicas),
            containers=containers,
            at=self.now,
            cut_off=cut_off,
            unconnected=unconnected,
            leader=leader,
        )
        self._view = (rev, v)
        return v

    async def events(self, kind: str | None = None) -> list[str]:
        """The messages of the cluster's events (of one ``kind``), oldest first."""
        listing = await self.state.events.list()
        return [
            str(r.value["message"])
            for r in listing.records
            if kind is None or r.value.get("kind") == kind
        ]

    def _picture(self) -> str:
        return self._view[1].dump() if self._view else "(no view yet)"

    async def _dump(self) -> str:
        return (await self.view()).dump()

    async def problems(self) -> list[str]:
        return problems(await self.view())

    async def check(self, what: str = "invariants") -> None:
        """Fail with the picture if any invariant of a settled cluster is broken."""
        v = await self.view()
        found = problems(v)
        if found:
            raise SimError(f"{what}: " + "; ".join(found) + "\n" + v.dump())


def spec(
    name: str,
    replicas: int,
    *,
    cpu: int = 100,
    memory: int = 64 << 20,
    image: str = "busybox:latest",
    **kw: Any,
) -> WorkloadSpec:
    """A workload spec builder for scenarios."""
    return WorkloadSpec(
        name=name, image=image, replicas=replicas, resources=Resources(cpu, memory), **kw
    )
