"""``Dispatcher``: the leader's agent sessions: who is connected, what each node must run,
and the log requests between users and agents.

Runs on every coordinator but serves agents only while this coordinator leads and only once
it knows every workload and replica (``active``): an assignment needs each replica's spec,
and a replica whose workload is unknown is left out of its node's set, which tells the
agent to stop it. While leading it:

* keeps one ``Session`` per connected node (an outbound message queue); a newer stream from
  the same node replaces the older one;
* hands what the streams see (opened, closed, hello, heartbeat, goodbye) to ``Liveness``,
  which decides and writes node states;
* writes the replica statuses agents report onto the replica records (observed state only
  moves forward: ``Replica.advance``);
* watches the replicas and workloads tables and pushes each node the full set of replicas it
  should run as soon as that set changes (not at the next heartbeat);
* routes log requests to the agent holding the replica, and accepts a log chunk only from
  the node its request went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cloudless.api.convert import BadStatus, assignment, observe
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.dispatcher.usage_board import UsageBoard
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.loops.liveness import Liveness, StreamBeats
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.node_view import NodeView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import Clock
from cloudless.lib.first import first_of
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.network.errors import NetworkConfigError
from cloudless.network.overlay_state import OverlayReport, report_from_pb
from cloudless.observability.metrics import AGENT_SESSIONS, AGENT_SESSIONS_OPENED
from cloudless.store.fence import Fence
from cloudless.store.types import EventType

log = logging.getLogger("cloudless.coordinator.dispatcher")


class TrustAdvice(Protocol):
    """Fills an ack with trust advice for the agent, and records what it reported."""

    def advise(self, node_id: str, hb: pb.Heartbeat, reply: pb.HeartbeatAck) -> None: ...

    async def record(self, node_id: str, hb: pb.Heartbeat, fence: Fence) -> None: ...


class NotLeader(Exception):
    """This coordinator does not lead, or does not serve agents yet (tables not loaded)."""


@dataclass
class Session:
    node_id: str
    outbox: asyncio.Queue[pb.CoordinatorMessage] = field(default_factory=asyncio.Queue)
    generation: int = 0
    closed: bool = False
    beats: StreamBeats = field(default_factory=StreamBeats)
    services_revision: int = -1  # of the service table last sent (-1: none yet)
    services_updates: bool = False  # its agent said (Hello) it applies NetworkServicesUpdate


@dataclass
class _Index:
    """Replicas by node and workload specs, kept current from store watches."""

    replicas: dict[str, Replica] = field(default_factory=dict)
    by_node: dict[str, set[str]] = field(default_factory=dict)
    workloads: dict[str, WorkloadRecord] = field(default_factory=dict)

    def put(self, r: Replica) -> str | None:
        old = self.replicas.get(r.id)
        self.replicas[r.id] = r
        if old and old.node_id != r.node_id:
            self.by_node.get(old.node_id, set()).discard(r.id)
        self.by_node.setdefault(r.node_id, set()).add(r.id)
        return old.node_id if old and old.node_id != r.node_id else None

    def drop(self, replica_id: str) -> str | None:
        old = self.replicas.pop(replica_id, None)
        if old is None:
            return None
        self.by_node.get(old.node_id, set()).discard(replica_id)
        return old.node_id

    def for_node(self, node_id: str) -> list[Replica]:
        return [self.replicas[i] for i in sorted(self.by_node.get(node_id, ()))]


class Dispatcher:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        view: NodeView,
        liveness: Liveness,
        events: EventRecorder,
    ) -> None:
        self.state = state
        self.clock = clock
        self.view = view
        self.liveness = liveness
        self.events = events
        self.sessions: dict[str, Session] = {}
        self._index = _Index()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._fence: Fence | None = None
        self._ready = asyncio.Event()
        # Set once the workloads table is loaded: no set may be built before (see the module
        # docstring).
        self._workloads_loaded = asyncio.Event()
        # request id -> (the node it was sent to, where its chunks go)
        self._log_waiters: dict[str, tuple[str, asyncio.Queue[pb.LogChunk]]] = {}
        #: Secret and config values by key (``WorkloadSpec.secret_names``: a secret's name, a
        #: config's ``config_key``), for replicas whose spec refers to them.
        self.secret_values: Callable[[str], bytes | None] = lambda name: None
        #: Root rotation: what to tell agents about trust in acks (``clusterops``).
        self.trust: TrustAdvice | None = None
        #: The node's container network (``network.publisher``), sent with its set; None: off.
        self.network_for: Callable[[str], pb.NetworkConfig | None] = lambda node_id: None
        #: Each node's container network as its agent last reported it (observed, in memory).
        self.network_states: dict[str, str] = {}
        #: Each connected node's overlay as its agent last reported it (observed, in memory;
        #: forgotten with the session). Read by the leader's ``OverlayObserver``.
        self.overlay_reports: dict[str, OverlayReport] = {}
        self.usage = UsageBoard()  # live replica usage from heartbeats (memory only)

    # ---- leadership ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._fence is not None and self._ready.is_set()

    def start(self, fence: Fence) -> None:
        """A new term: serve agents once the tables are loaded (``watch_*``)."""
        self._fence = fence

    def stop(self) -> None:
        """The term ended: every session is told to go to the new leader and dropped."""
        self._fence = None
        self._ready.clear()
        self._workloads_loaded.clear()
        for s in list(self.sessions.values()):
            s.closed = True
            s.outbox.put_nowait(
                pb.CoordinatorMessage(redirect=pb.Redirect(reason="leader changed"))
            )
        self.sessions.clear()

    async def wait_active(self, timeout: float) -> bool:
        """Wait until this dispatcher serves agents (we lead and the replicas are loaded), at
        most ``timeout`` seconds (on the injected clock); whether it does."""
        if not self._ready.is_set():
            await first_of(self._ready.wait(), self.clock.sleep(timeout))
        return self.active

    def known_replicas(self, namespace: str = "") -> list[Replica] | None:
        """Every replica (of a workload in ``namespace`` when given) as the leader's watches
        last saw it; ``None`` when not serving agents."""
        if not self.active:
            return None
        reps = list(self._index.replicas.values())
        if namespace:
            wls = self._index.workloads
            reps = [r for r in reps if (w := wls.get(r.workload)) and w.spec.namespace == namespace]
        return reps

    def fence(self) -> Fence:
        if self._fence is None:
            raise NotLeader("not the leader")
        return self._fence

    # ---- sessions --------------------------------------------------------------------------

    async def open_session(self, node_id: str) -> Session:
        if not self.active:
            raise NotLeader("not the leader")
        # The nodes view keeps every node current: a reconnect storm of thousands of agents
        # must not cost a store read each. A node enrolled a moment ago may not be there yet.
        known = self.view.nodes.get(node_id)
        if known is None:
            rec = await self.state.nodes.get(node_id)
            known = rec.value if rec is not None else None
        if known is None or known.state is NodeState.REMOVED:
            raise PermissionError(f"node {node_id} is not a member of this cluster (removed?)")
        old = self.sessions.pop(node_id, None)
        if old:
            old.closed = True
            old.outbox.put_nowait(
                pb.CoordinatorMessage(redirect=pb.Redirect(reason="replaced by a newer session"))
            )
        s = Session(node_id)
        self.sessions[node_id] = s
        self.usage.forget_node(node_id)  # the new stream sends every replica's usage
        AGENT_SESSIONS.set(len(self.sessions))
        AGENT_SESSIONS_OPENED.inc()
        s.beats = self.liveness.connected(known)
        self._mark(node_id)
        return s

    def close_session(self, s: Session) -> None:
        s.closed = True
        if self.sessions.get(s.node_id) is s:
            del self.sessions[s.node_id]
            self.usage.forget_node(s.node_id)
            self.overlay_reports.pop(s.node_id, None)
            self.liveness.disconnected(s.node_id)
            AGENT_SESSIONS.set(len(self.sessions))

    async def on_hello(self, s: Session, hello: pb.Hello) -> None:
        s.services_updates = hello.services_updates
        await self._apply_statuses(s, hello.replicas)
        self.liveness.heard(s.node_id)
        await self.liveness.note_metrics_address(s.node_id, hello.facts.metrics_address)
        await self.liveness.note_reserved(s.node_id, hello.facts.reserved_hours)
        await self.liveness.note_nebula_key(s.node_id, hello.facts.nebula_public_key)

    async def on_heartbeat(
        self,
        s: Session,
        hb: pb.Heartbeat,
        ack: Callable[[pb.HeartbeatAck], None] | None = None,
    ) -> pb.HeartbeatAck:
        """Take a heartbeat: liveness in memory first, and the ack handed to ``ack`` before
        any store write (an agent's view of the link must not wait on an etcd round trip);
        then the node transition, replica statuses and the periodic usage refresh."""
        if hb.network_state:
            self.network_states[s.node_id] = hb.network_state
        if hb.HasField("overlay"):
            try:
                self.overlay_reports[s.node_id] = report_from_pb(hb.overlay)
            except NetworkConfigError as e:
                self.overlay_reports.pop(s.node_id, None)
                log.warning("node %s: overlay report ignored: %s", s.node_id, e)
        reply, transitions = self.liveness.beat(s.node_id, s.beats, hb)
        if self.trust is not None:
            self.trust.advise(s.node_id, hb, reply)
        if ack is not None:
            ack(reply)
        if self.trust is not None:
            await self.trust.record(s.node_id, hb, self.fence())
        await self.liveness.write_transitions(transitions)
        self.usage.take(s.node_id, hb.replica_usage, hb.usage_gone, self._index.replicas)
        await self._apply_statuses(s, hb.replicas)
        await self.liveness.maybe_write_usage(s.node_id, s.beats, hb)
        return reply

    async def on_goodbye(self, s: Session, bye: pb.Goodbye) -> None:
        await self.liveness.goodbye(s.node_id, bye)

    async def on_leave(self, s: Session, leave: pb.Leave) -> None:
        await self.liveness.leave(s.node_id, leave)

    async def _apply_statuses(self, s: Session, statuses: Iterable[pb.ReplicaStatus]) -> None:
        now = self.clock.now()
        for st in statuses:
            r = self._index.replicas.get(st.replica_id)
            if r is None or r.node_id != s.node_id:
                continue  # not (or no longer) this node's: the assignment tells it to stop
            try:
                new = observe(r, st, now)
            except BadStatus as e:
                log.warning("node %s: %s", s.node_id, e)
                continue
            if new is None:
                continue
            await self._update_replica(new, r)

    async def _update_replica(self, new: Replica, seen: Replica) -> None:
        """Write an agent's report onto the stored replica. Observed state only moves forward
        within an incarnation (``Replica.advance``): a backward report is logged and dropped."""
        key = ClusterState.replica_key(new)
        backward: list[ReplicaState] = []

        def change(cur: Replica | None) -> Replica | None:
            backward.clear()
            if cur is None or cur.node_id != new.node_id:
                return None
            if cur.spec_version != new.spec_version and new.observed is not ReplicaState.FAILED:
                return None
            moved = cur.advance(new)
            if moved is None:
                backward.append(cur.observed)
            return moved

        rec = await self.state.replicas.update(key, change, fence=self.fence())
        if backward:
            log.warning(
                "node %s: replica %s reported %s after %s (restarts %d): dropped, observed "
                "state only moves forward",
                new.node_id,
                new.id,
                new.observed.value,
                backward[0].value,
                new.restarts,
            )
            return
        if rec and rec.value.observed is not seen.observed:
            if new.observed in (ReplicaState.RUNNING, ReplicaState.FAILED):
                self.liveness.replica_outcome(new.node_id, new.observed is ReplicaState.FAILED)
            await self.events.emit(
                "replica",
                f"replica {new.id} on {new.node_id}: {seen.observed.value} -> {new.observed.value}"
                + (f" ({new.reason})" if new.reason else ""),
                replica=new.id,
                workload=new.workload,
                node=new.node_id,
                state=new.observed.value,
            )

    # ---- the nodes watch (``NodeListener``) ------------------------------------------------

    def nodes_listed(self, nodes: list[Node]) -> None:
        pass

    def node_deleted(self, node_id: str) -> None:
        pass

    def node_changed(self, node_id: str, node: Node) -> None:
        if node.state is not NodeState.REMOVED:
            return
        s = self.sessions.pop(node_id, None)
        if s:
            # An empty set first: the removed node stops its containers.
            s.generation += 1
            s.outbox.put_nowait(
                pb.CoordinatorMessage(assignments=pb.Assignments(generation=s.generation))
            )
            s.closed = True
            s.outbox.put_nowait(pb.CoordinatorMessage(redirect=pb.Redirect(reason="node removed")))

    # ---- leader loops ----------------------------------------------------------------------

    async def watch_replicas(self) -> None:
        await self._workloads_loaded.wait()
        listing = await self.state.replicas.list()
        index = _Index(workloads=self._index.workloads)
        for rec in listing.records:
            index.put(rec.value)
        restarted, self._index = self._ready.is_set(), index
        if restarted:  # after a failed watch: changes may have been missed; resend every set
            for node_id in self.sessions:
                self._mark(node_id)
        self._ready.set()
        async for ev in self.state.replicas.watch(start_revision=listing.revision + 1):
            if ev.type is EventType.DELETE:
                rid = ev.name.rsplit("/", 1)[-1]
                node = self._index.drop(rid)
                if node:
                    self._mark(node)
            elif ev.record is not None:
                moved_from = self._index.put(ev.record.value)
                self._mark(ev.record.value.node_id)
                if moved_from:
                    self._mark(moved_from)

    async def watch_workloads(self) -> None:
        listing = await self.state.workloads.list()
        self._index.workloads = {r.name: r.value for r in listing.records}
        if self._workloads_loaded.is_set():
            # after a failed watch: changes may have been missed; resend every set
            for node_id in self.sessions:
                self._mark(node_id)
        self._workloads_loaded.set()
        async for ev in self.state.workloads.watch(start_revision=listing.revision + 1):
            if ev.type is EventType.DELETE:
                self._index.workloads.pop(ev.name, None)
            elif ev.record is not None:
                self._index.workloads[ev.name] = ev.record.value
                for r in self._index.replicas.values():
                    if r.workload == ev.name:
                        self._mark(r.node_id)

    def _mark(self, node_id: str) -> None:
        if node_id in self.sessions:
            self._dirty.add(node_id)
            self._dirty_event.set()

    async def push_loop(self) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            for node_id in dirty:
                s = self.sessions.get(node_id)
                if s is not None and not s.closed:
                    s.outbox.put_nowait(self.assignments_for(s))

    def repush(self, node_ids: Iterable[str]) -> None:
        """Send these nodes their set again (their network changed)."""
        for node_id in node_ids:
            self._mark(node_id)

    def push_services(self, update: pb.NetworkServicesUpdate, node_ids: Iterable[str]) -> None:
        """Send these nodes a change of their service table: the change alone to a node whose
        agent applies such changes (its Hello says so) and whose stream last carried the table
        the change starts from; the whole set to any other."""
        for node_id in node_ids:
            s = self.sessions.get(node_id)
            if s is None or s.closed:
                continue
            if s.services_updates and s.services_revision == update.base:
                s.outbox.put_nowait(pb.CoordinatorMessage(services_update=update))
                s.services_revision = update.revision
            else:
                self._mark(node_id)

    def secrets_changed(self, names: set[str]) -> None:
        """Re-push the assignments of nodes running a replica that uses one of ``names`` (keys:
        a secret's name, a config's ``config_key``)."""
        for node_id in list(self.sessions):
            for r in self._index.for_node(node_id):
                rec = self._index.workloads.get(r.workload)
                if rec is not None and names & rec.spec.secret_names():
                    self._mark(node_id)
                    break

    def assignments_for(self, s: Session) -> pb.CoordinatorMessage:
        s.generation += 1
        out = []
        for r in self._index.for_node(s.node_id):
            rec = self._index.workloads.get(r.workload)
            if rec is None:
                continue
            values = {n: v for n in rec.spec.secret_names() if (v := self.secret_values(n))}
            drop = rec.deleted and rec.delete_volumes
            out.append(assignment(r, rec.spec, values, drop_volumes=drop))
        msg = pb.Assignments(generation=s.generation, replicas=out)
        net = self.network_for(s.node_id)
        s.services_revision = -1
        if net is not None:
            msg.network.CopyFrom(net)
            s.services_revision = net.services_revision
        return pb.CoordinatorMessage(assignments=msg)

    # ---- logs ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def log_stream(
        self, replica_id: str, *, follow: bool, tail: int, request_id: str
    ) -> AsyncIterator[asyncio.Queue[pb.LogChunk]]:
        """Ask the agent holding ``replica_id`` for its logs; the chunks arrive on the
        yielded queue. ``LookupError``: no such replica; ``ConnectionError``: its node is
        not connected. Leaving the context cancels a followed stream."""
        r = self._index.replicas.get(replica_id)
        if r is None:
            raise LookupError(f"replica {replica_id!r} not found")
        s = self.sessions.get(r.node_id)
        if s is None:
            raise ConnectionError(f"node {r.node_id} holding {replica_id} is not connected")
        q: asyncio.Queue[pb.LogChunk] = asyncio.Queue()
        self._log_waiters[request_id] = (r.node_id, q)
        s.outbox.put_nowait(
            pb.CoordinatorMessage(
                logs=pb.LogRequest(
                    request_id=request_id, replica_id=replica_id, follow=follow, tail=tail
                )
            )
        )
        try:
            yield q
        finally:
            self._log_waiters.pop(request_id, None)
            if follow and not s.closed:
                s.outbox.put_nowait(
                    pb.CoordinatorMessage(logs=pb.LogRequest(request_id=request_id, cancel=True))
                )

    def on_log(self, node_id: str, chunk: pb.LogChunk) -> bool:
        """Hand ``chunk`` to its request's reader if ``node_id`` is the node the request was
        sent to; False (dropped) for a chunk from any other node. A chunk for a request that
        has ended is dropped quietly (True): the node had not seen the cancel yet."""
        waiter = self._log_waiters.get(chunk.request_id)
        if waiter is None:
            return True
        if waiter[0] != node_id:
            return False
        waiter[1].put_nowait(chunk)
        return True
