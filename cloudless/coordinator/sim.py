"""A simulated cluster on one ``FakeClock``: real coordinator brains, simulated agents.

``SimCluster`` runs, in one event loop, one or more coordinator *brains* (the real
``Election``, ``AgentHub`` and ``Reconciler`` with the real ``SchedulerPlacer``, over one
shared ``MemoryStore``) and many *agents*, each the real ``Supervisor`` over a ``FakeRuntime``
on its own ``FakeHost`` plus a small in-process link that does what
``cloudless.agent.link.Link`` does without gRPC: open a session on the leader's hub, send a
Hello and heartbeats with the replica statuses, and hand every ``Assignments`` message to the
supervisor. Time moves only when the harness advances the clock (``run_for``/``until``), and
after each step the loop is run until it has nothing left to do, so minutes of cluster time
pass in about a second and nothing sleeps for real.

Faults, per agent (``SimAgent``): ``kill`` (process gone, stream breaks), ``crash_host``
(the machine too: its containers vanish), ``freeze`` (no heartbeats, session left open),
``partition``/``heal`` (link cut without a FIN while the supervisor and its containers go
on; heal reconnects with a new session), ``restart`` (new supervisor and runtime on the same
host: they adopt the containers), and ``FakeBehavior`` knobs for crashing containers and slow
pulls. Per brain: ``crash`` (dies without resigning: its lease must lapse first).

``SimCluster.view()`` reads the store into a ``SimView``; ``SimView.dump()`` is the readable
cluster picture every harness failure message carries, and ``SimCluster.problems()`` checks
the invariants that must hold once the cluster has settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import traceback
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cloudless.agent.link import assignments_from_pb, status_pb
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.hub import AgentHub, NotLeader, Session
from cloudless.coordinator.membership import MembershipConfig
from cloudless.coordinator.placer import SchedulerPlacer
from cloudless.coordinator.reconciler import Reconciler
from cloudless.coordinator.records import WorkloadRecord
from cloudless.coordinator.state import ClusterState
from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.ids import RandomIds
from cloudless.model.node import Node, NodeState, transition
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.fake import FakeBehavior, FakeHost, FakeRuntime
from cloudless.runtime.types import ContainerState
from cloudless.store.election import Election
from cloudless.store.errors import StoreError
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore
from cloudless.store.types import Compare, Lease, Listing, TxnOp, TxnResult, WatchBatch

log = logging.getLogger("cloudless.sim")

NODE_SIZE = Resources(4000, 8 << 30, 100 << 30, 10**9)


class SimClock(FakeClock):
    """A ``FakeClock`` that can say when its next sleeper is due, so the harness can step
    exactly to each deadline instead of quantizing every timer to its step."""

    def next_deadline(self) -> float | None:
        heap = self._sleepers
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def wake(self, seconds: float, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` after ``seconds`` unless something else resolves it first (a
        sleep that another event can cut short, without a task per sleep)."""
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))


class SimError(AssertionError):
    """A scenario expectation failed; the message carries the cluster picture."""


# ---- the store as one brain reaches it ---------------------------------------------------


class GatedStore:
    """A brain's connection to the shared store; ``cut`` makes every call fail like a lost
    network path (the brain cannot renew its lease, so it lapses after the TTL)."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise StoreError("store unreachable (simulated cut)")

    async def get(self, key: str) -> Any:
        self._check()
        return await self.inner.get(key)

    async def list(self, prefix: str, *, revision: int = 0) -> Listing:
        self._check()
        return await self.inner.list(prefix, revision=revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check()
        return await self.inner.put(key, value, lease=lease)

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        self._check()
        return await self.inner.delete(key, prefix=prefix)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[TxnOp],
        failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        self._check()
        return await self.inner.txn(compares, success, failure)

    async def watch(
        self, prefix: str, *, start_revision: int = 0, prev_kv: bool = False
    ) -> AsyncGenerator[WatchBatch, None]:
        self._check()
        async with contextlib.aclosing(
            self.inner.watch(prefix, start_revision=start_revision, prev_kv=prev_kv)
        ) as batches:
            async for batch in batches:
                self._check()
                yield batch

    async def grant_lease(self, ttl: int) -> Lease:
        self._check()
        return await self.inner.grant_lease(ttl)

    async def keepalive(self, lease_id: int) -> int:
        self._check()
        return await self.inner.keepalive(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        self._check()
        await self.inner.revoke_lease(lease_id)

    async def lease_ttl(self, lease_id: int) -> int:
        self._check()
        return await self.inner.lease_ttl(lease_id)

    async def compact(self, revision: int) -> None:
        self._check()
        await self.inner.compact(revision)

    async def revision(self) -> int:
        self._check()
        return await self.inner.revision()

    async def close(self) -> None:
        return None


# ---- a coordinator brain -----------------------------------------------------------------


class Brain:
    """One coordinator's leader machinery, wired as ``Coordinator`` wires it (no servers)."""

    def __init__(
        self,
        name: str,
        store: MemoryStore,
        clock: SimClock,
        membership: MembershipConfig,
        rng: random.Random,
        election_ttl: int,
    ) -> None:
        self.name = name
        self.clock = clock
        self.link = GatedStore(store)
        self.state = ClusterState(self.link)
        self.election = Election(self.link, name, ttl=election_ttl, clock=clock, rng=rng)
        self.hub = AgentHub(self.state, clock, membership)
        self.reconciler = Reconciler(self.state, SchedulerPlacer(), RandomIds(rng), clock)
        self.task: asyncio.Task[None] | None = None
        self.terms = 0

    @property
    def leading(self) -> bool:
        return self.hub.active and self.election.is_leader()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.election.run())
            tg.create_task(self._follow())

    async def _follow(self) -> None:
        task: asyncio.Task[None] | None = None
        try:
            async for lead in self.election.changes():
                if lead.is_me and task is None:
                    self.terms += 1
                    task = asyncio.create_task(self._leading())
                elif not lead.is_me and task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    task = None
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _leading(self) -> None:
        while self.election.is_leader():
            try:
                fence = self.election.fence()
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.hub.lead(fence))
                    tg.create_task(self.reconciler.lead(fence))
            except* (StoreError, CloudlessError) as eg:
                log.info("%s: leader loops stopped (%s)", self.name, eg.exceptions[0])
            await self.clock.sleep(0.2)


# ---- a simulated agent ---------------------------------------------------------------------


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
        self.interval = 0.5
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
        self.supervisor = Supervisor(self.runtime, self.clock, self._on_change)
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
        """The process stops for ``seconds`` (no heartbeats, session left open)."""
        self.frozen_until = self.clock.monotonic() + seconds

    def partition(self) -> None:
        """Cut the link without a FIN: the coordinator keeps the session open and hears
        nothing; the supervisor goes on running containers."""
        self.partitioned = True
        self._healed.clear()
        self._cut.set()

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
                    s = await brain.hub.open_session(self.node_id)
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
                self.session = s
                try:
                    await self._serve(brain.hub, s)
                finally:
                    self.session = None
                    if not self.partitioned:
                        brain.hub.close_session(s)
                if self.partitioned or self.frozen_until > self.clock.monotonic():
                    break
            await self.clock.sleep(self.backoff.delay(attempt, self.rng))
            attempt += 1

    async def _serve(self, hub: AgentHub, s: Session) -> None:
        """One session: Hello, then heartbeats and incoming messages, until the stream ends
        (redirect, hub error) or the link is cut."""
        assert self.supervisor is not None
        now = self.clock.now()
        try:
            await hub.on_hello(
                s,
                pb.Hello(
                    node_id=self.node_id,
                    replicas=[status_pb(st, now) for st in self.supervisor.statuses()],
                ),
            )
        except (NotLeader, StoreError):
            return
        await _race(self._heartbeats(hub, s), self._reader(s), self._cut.wait())

    async def _heartbeats(self, hub: AgentHub, s: Session) -> None:
        assert self.supervisor is not None
        while not s.closed:
            await self._thawed()
            self._changed = False
            self.seq += 1
            now = self.clock.now()
            hb = pb.Heartbeat(
                seq=self.seq,
                sent_at=now,
                replicas=[status_pb(st, now) for st in self.supervisor.statuses()],
            )
            try:
                ack = await hub.on_heartbeat(s, hb)
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


async def _race(*aws: Coroutine[Any, Any, Any]) -> int:
    """Run ``aws`` until the first finishes; cancel the rest; return the winner's index
    (re-raising its exception)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    winner = next(i for i, t in enumerate(tasks) if t in done)
    tasks[winner].result()
    return winner


# ---- the view --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimView:
    """The store's cluster state at one revision, plus what each host really runs."""

    nodes: dict[str, Node]
    workloads: dict[str, WorkloadRecord]
    replicas: dict[str, Replica]
    containers: dict[str, dict[str, str]]  # node id -> {running container id: workload}
    at: float  # simulated seconds since start
    cut_off: dict[str, str] = field(default_factory=dict)  # node id -> "down" | "partitioned"
    unconnected: frozenset[str] = frozenset()  # agents up but without a session
    leader: str | None = None  # the leading coordinator's name

    def of(self, workload: str) -> list[Replica]:
        return sorted(
            (r for r in self.replicas.values() if r.workload == workload), key=lambda r: r.id
        )

    def running(self, workload: str) -> list[Replica]:
        """Replicas of ``workload`` that should run and are reported running."""
        return [
            r
            for r in self.of(workload)
            if r.desired is DesiredState.RUNNING and r.observed is ReplicaState.RUNNING
        ]

    def on_node(self, node_id: str) -> list[Replica]:
        return sorted(
            (r for r in self.replicas.values() if r.node_id == node_id), key=lambda r: r.id
        )

    def state(self, node_id: str) -> NodeState:
        return self.nodes[node_id].state

    def containers_of(self, workload: str) -> list[str]:
        """Running containers of ``workload`` on all hosts (duplicates count)."""
        return sorted(
            c
            for n, cs in self.containers.items()
            if n not in self.cut_off
            for c, w in cs.items()
            if w == workload
        )

    def dump(self, limit: int = 60) -> str:
        lines = [f"cluster at t={self.at:.2f}s, leader {self.leader or 'none'}:"]
        for name, rec in sorted(self.workloads.items()):
            reps = self.of(name)
            lines.append(
                f"  workload {name} v{rec.version} wants {rec.spec.replicas}"
                f"{' (deleted)' if rec.deleted else ''}: {len(reps)} replicas, "
                f"{len(self.running(name))} running, {len(self.containers_of(name))} containers"
                + (f", unplaced {rec.unplaced}: {rec.unplaced_reason}" if rec.unplaced else "")
            )
        for i, (nid, n) in enumerate(sorted(self.nodes.items())):
            if i >= limit:
                lines.append(f"  ... {len(self.nodes) - limit} more nodes")
                break
            held = " ".join(
                f"{r.id}[{r.desired.value[:4]}/{r.observed.value} v{r.spec_version}]"
                for r in self.on_node(nid)
            )
            ctrs = ",".join(self.containers.get(nid, {})) or "-"
            agent = f" (agent {self.cut_off[nid]})" if nid in self.cut_off else ""
            agent += " (not connected)" if nid in self.unconnected else ""
            lines.append(
                f"  {nid} {n.state.value:9} {n.zone or '-':6} {held or '-'} | run: {ctrs}{agent}"
            )
        return "\n".join(lines)


def problems(view: SimView) -> list[str]:
    """Invariants of a settled cluster; each problem is a sentence naming what is wrong."""
    out: list[str] = []
    if view.leader is None:
        out.append("no coordinator leads")
    out.extend(f"agent of {n} is up but not connected" for n in sorted(view.unconnected))
    specs = {n: r.spec for n, r in view.workloads.items()}
    for name, rec in sorted(view.workloads.items()):
        if rec.deleted:
            continue
        want = rec.spec.replicas
        ready = [
            r for r in view.running(name) if view.nodes[r.node_id].state is not NodeState.FAILED
        ]
        if len(ready) != want:
            out.append(f"{name}: {len(ready)} replicas running, wants {want}")
        stale = [r.id for r in ready if r.spec_version != rec.version]
        if stale:
            out.append(f"{name}: {len(stale)} running replicas not on spec v{rec.version}")
        ctrs = view.containers_of(name)
        if len(ctrs) != want:
            out.append(f"{name}: {len(ctrs)} containers run on reachable hosts, wants {want}")
    used: dict[str, Resources] = {}
    for r in view.replicas.values():
        node = view.nodes.get(r.node_id)
        if r.desired is not DesiredState.RUNNING:
            continue
        if node is None or node.state in (NodeState.FAILED, NodeState.REMOVED):
            state = node.state.value if node else "gone"
            out.append(f"replica {r.id} is assigned to {r.node_id}, which is {state}")
        if r.workload in specs:
            used[r.node_id] = used.get(r.node_id, Resources()) + specs[r.workload].resources
    for nid, u in sorted(used.items()):
        node = view.nodes.get(nid)
        if node is not None and not u.fits(node.allocatable):
            out.append(
                f"node {nid} is over-committed: {u} assigned, {node.allocatable} allocatable"
            )
    for nid, cs in sorted(view.containers.items()):
        if nid in view.cut_off:
            continue  # nobody can tell that host to stop anything
        for c in cs:
            rep = view.replicas.get(c)
            if rep is None or rep.node_id != nid or rep.desired is not DesiredState.RUNNING:
                out.append(f"container {c} runs on {nid} but no replica there wants it")
    return out


# ---- the cluster -----------------------------------------------------------------------------


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
    ) -> None:
        """``exact``: step the clock to every timer's deadline (timings exact to the float);
        otherwise in fixed ``step_s`` steps (cheaper with thousands of agents)."""
        self.clock = SimClock()
        self.exact = exact
        self.rng = random.Random(seed)
        self.step_s = step_s
        self.membership = membership or MembershipConfig()
        self.store = MemoryStore(self.clock, retain_revisions=20_000)
        self.state = ClusterState(self.store)  # the harness's own, uncut, view of the store
        self.brains = [
            Brain(
                f"coord-{i}",
                self.store,
                self.clock,
                self.membership,
                random.Random(self.rng.getrandbits(32)),
                election_ttl,
            )
            for i in range(coordinators)
        ]
        self.agents: dict[str, SimAgent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failures: list[str] = []
        self._view: tuple[int, SimView] | None = None

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
            b.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await b.task
        b.task = None

    def isolate_brain(self, b: Brain) -> None:
        """The coordinator loses the store (etcd partition) but keeps running and stays
        reachable by agents. Undo with ``b.link.cut = False``."""
        b.link.cut = True

    def replace_brain(self, b: Brain) -> Brain:
        """A crashed coordinator comes back as a fresh process (same name, empty memory)."""
        fresh = Brain(
            b.name,
            self.store,
            self.clock,
            self.membership,
            random.Random(self.rng.getrandbits(32)),
            b.election.ttl,
        )
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

    # -- user requests (as the HTTP API makes them) -------------------------------------------

    async def apply(self, spec: WorkloadSpec) -> WorkloadRecord:
        now = self.clock.now()

        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            if cur is None:
                return WorkloadRecord(spec=spec, created_at=now, updated_at=now)
            new = cur.with_spec(spec, now)
            return None if new is cur else new

        rec = await self.state.workloads.update(spec.name, change, fence=self.fence())
        assert rec is not None
        return rec.value

    async def scale(self, name: str, replicas: int) -> None:
        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            if cur is None or cur.deleted or cur.spec.replicas == replicas:
                return None
            return replace(cur, spec=replace(cur.spec, replicas=replicas))

        await self.state.workloads.update(name, change, fence=self.fence())

    async def delete(self, name: str) -> None:
        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            return None if cur is None or cur.deleted else replace(cur, deleted=True)

        await self.state.workloads.update(name, change, fence=self.fence())

    async def set_node_state(self, node_id: str, target: NodeState) -> None:
        """Cordon (``CORDONED``), drain (``DRAINING``), uncordon (``READY``) or remove."""
        refusal: list[str] = []

        def change(cur: Node | None) -> Node | None:
            if cur is None:
                return None
            t = transition(cur.state, target)
            if not t.ok:
                refusal.append(t.reason)
                return None
            return None if t.state is cur.state else replace(cur, state=t.state)

        await self.state.nodes.update(node_id, change, fence=self.fence())
        if refusal:
            raise SimError(f"cannot set {node_id} to {target.value}: {refusal[0]}")

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
            nid
            for nid, a in self.agents.items()
            if a.up and not a.partitioned and a.session is None
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
