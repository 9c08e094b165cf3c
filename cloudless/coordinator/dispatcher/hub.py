"""The leader's agent hub: live sessions, heartbeats, liveness and assignment pushes.

Runs on every coordinator but serves agents only while this coordinator leads; a follower
answers ``Connect`` with a redirect to the leader. While leading it:

* keeps one ``Session`` per connected node (an outbound message queue);
* feeds heartbeats and stream breaks to ``Membership`` and writes the resulting node-state
  transitions (and only those, plus a periodic usage refresh) to the store;
* writes replica status changes reported by agents to the store;
* watches the replicas and workloads tables and pushes each node the full set of replicas
  it should run as soon as that set changes (not at the next heartbeat);
* routes log requests to the agent holding the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from cloudless.api.convert import (
    BadStatus,
    assignment,
    conditions_from_pb,
    observe,
    resources_from_pb,
)
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.deciders.membership import Membership, MembershipConfig, NodeTransition
from cloudless.coordinator.deciders.reliability import ReliabilityTracker
from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import Clock
from cloudless.model.departure import Departure, DepartureKind
from cloudless.model.node import Node, NodeConditions, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.observability.http import metrics_address_problem
from cloudless.observability.metrics import AGENT_SESSIONS, HEARTBEATS, HEARTBEATS_LATE
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence, fenced_txn
from cloudless.store.table import TableListing
from cloudless.store.types import EventType

log = logging.getLogger("cloudless.coordinator.dispatcher.hub")

USAGE_REFRESH_S = 10.0
# Usage refreshes stretch as the cluster grows so they cost at most this many node writes
# per second (5,000 nodes: every 50 s). Condition changes are written at once regardless.
MAX_USAGE_WRITES_PER_S = 100.0


def usage_refresh_s(node_count: int) -> float:
    """Seconds between two usage writes of one node: 10 s up to 1,000 nodes, then linear."""
    return max(USAGE_REFRESH_S, node_count / MAX_USAGE_WRITES_PER_S)


class TrustAdvice(Protocol):
    """Fills an ack with trust advice for the agent, and records what it reported."""

    def advise(self, node_id: str, hb: pb.Heartbeat, reply: pb.HeartbeatAck) -> None: ...

    async def record(self, node_id: str, hb: pb.Heartbeat, fence: Fence) -> None: ...


@dataclass
class Session:
    node_id: str
    outbox: asyncio.Queue[pb.CoordinatorMessage] = field(default_factory=asyncio.Queue)
    generation: int = 0
    last_usage_write: float = -1e18
    conditions: tuple[str, ...] = ()
    closed: bool = False
    last_beat: float = 0.0  # monotonic time of the last heartbeat (0: none yet)


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


class NotLeader(Exception):
    pass


NodeChange = Callable[[Node], Node]


def _with_usage(usage: Resources, conditions: NodeConditions, wall: float) -> NodeChange:
    return lambda cur: replace(cur, usage=usage, conditions=conditions, last_heartbeat=wall)


def _with_reliability(score: float) -> NodeChange:
    return lambda cur: replace(cur, reliability=score)


def _moved(cur: Node, t: NodeTransition, wall: float) -> Node | None:
    """``cur`` moved to ``t.new`` and stamped with ``wall``; ``None`` if the move is refused
    or changes nothing (``Node.moved_to``)."""
    new = cur.moved_to(t.new)[0]
    return None if new is None else replace(new, last_heartbeat=wall)


def _transition_message(t: NodeTransition) -> str:
    return f"node {t.node_id}: {t.old.value} -> {t.new.value} ({t.reason})"


def _if_present(change: NodeChange) -> Callable[[Node | None], Node | None]:
    """``change`` for ``Table.update``: a node that is gone stays gone."""
    return lambda cur: None if cur is None else change(cur)


class AgentHub:
    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        config: MembershipConfig | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.state = state
        self.clock = clock
        self.config = config or MembershipConfig()
        # root rotation: what to tell agents about trust in acks (``clusterops``)
        self.trust: TrustAdvice | None = None
        self.tick_s = tick_s
        self.membership = Membership(self.config)
        self.sessions: dict[str, Session] = {}
        self._index = _Index()
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._fence: Fence | None = None
        self._ready = asyncio.Event()
        # Set once the workloads table is loaded: an assignment needs each replica's spec,
        # and a replica whose workload is unknown is left out of its node's set (which tells
        # the agent to stop it), so no set may be built before the workloads are known.
        self._workloads_loaded = asyncio.Event()
        # request id -> (the node it was sent to, where its chunks go)
        self._log_waiters: dict[str, tuple[str, asyncio.Queue[pb.LogChunk]]] = {}
        self._sec_window = -1
        self._sec_count = 0
        self.reliability = ReliabilityTracker()
        self._nodes: dict[str, Node] = {}  # as last read from the store (for scores)
        self._node_revs: dict[str, int] = {}  # their mod revisions (for batched usage writes)
        self._usage_due: dict[str, tuple[Resources, NodeConditions, float]] = {}
        self._usage_event = asyncio.Event()
        self._nodes_from: int | None = None  # where _watch_nodes starts (None: list first)
        #: Secret values by name (``SecretCache.get``), for replicas whose spec refers to them.
        self.secret_values: Callable[[str], bytes | None] = lambda name: None
        #: The node's container network (``network.publisher``), sent with its set; None: off.
        self.network_for: Callable[[str], pb.NetworkConfig | None] = lambda node_id: None
        #: Each node's container network as its agent last reported it (observed, in memory).
        self.network_states: dict[str, str] = {}

    # ---- leadership ------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._fence is not None and self._ready.is_set()

    async def lead(self, fence: Fence) -> None:
        """Serve agents until cancelled (run while this coordinator is the leader)."""
        self._fence = fence
        try:
            nodes = await self.state.nodes.list()
            self.membership = Membership(self.config)
            self.membership.load([r.value for r in nodes.records], self.clock.monotonic())
            self._take_nodes(nodes)
            self._nodes_from = nodes.revision + 1
            self._usage_due = {}
            async with asyncio.TaskGroup() as tg:
                for loop in (
                    self._watch_replicas,
                    self._watch_workloads,
                    self._watch_nodes,
                    self._tick_loop,
                    self._push_loop,
                    self._reliability_loop,
                    self._usage_loop,
                ):
                    tg.create_task(self._keep(loop))
        finally:
            self._fence = None
            self._ready.clear()
            self._workloads_loaded.clear()
            for s in list(self.sessions.values()):
                s.closed = True
                s.outbox.put_nowait(
                    pb.CoordinatorMessage(redirect=pb.Redirect(reason="leader changed"))
                )
            self.sessions.clear()

    # How long a leader loop that failed on a store error waits before it starts again.
    LOOP_RESTART_S = 1.0

    async def _keep(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one leader loop; a store error (a slow or briefly unavailable etcd) restarts
        that loop alone. Ending ``lead`` instead would drop every agent's session, and at
        thousands of nodes their reconnects are a storm that keeps the store slow. Only a
        broken fence (another leader) ends it."""
        while True:
            try:
                await loop()
                return
            except (Fenced, NotLeader):
                raise
            except StoreError as e:
                log.warning("leader loop %s failed (%s); restarting it", loop.__name__, e)
                await self.clock.sleep(self.LOOP_RESTART_S)

    def known_nodes(self) -> list[Node] | None:
        """Every node as the leader's nodes watch last saw it (``None`` when not leading).
        Behind the store by the watch's delay: for checks that a node more or less does not
        change, such as whether a spec can fit anywhere."""
        return list(self._nodes.values()) if self.active else None

    async def wait_active(self, timeout: float) -> bool:
        """Wait until this hub serves agents (we lead and the replicas are loaded), at most
        ``timeout`` seconds (on the injected clock); whether it does."""
        if not self._ready.is_set():
            waits = (
                asyncio.ensure_future(self._ready.wait()),
                asyncio.ensure_future(self.clock.sleep(timeout)),
            )
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
        return self.active

    def fence(self) -> Fence:
        if self._fence is None:
            raise NotLeader("not the leader")
        return self._fence

    # ---- sessions --------------------------------------------------------------------------

    async def open_session(self, node_id: str) -> Session:
        if not self.active:
            raise NotLeader("not the leader")
        # The nodes watch keeps ``_nodes`` current: a reconnect storm of thousands of agents
        # must not cost a store read each. A node enrolled a moment ago may not be there yet.
        known = self._nodes.get(node_id)
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
        AGENT_SESSIONS.set(len(self.sessions))
        if self.membership.state(node_id) is None:
            self.membership.upsert(known, self.clock.monotonic())
        self._mark(node_id)
        return s

    def close_session(self, s: Session) -> None:
        s.closed = True
        if self.sessions.get(s.node_id) is s:
            del self.sessions[s.node_id]
            self.membership.disconnected(s.node_id, self.clock.monotonic())
            AGENT_SESSIONS.set(len(self.sessions))

    async def on_hello(self, s: Session, hello: pb.Hello) -> None:
        await self._apply_statuses(s, hello.replicas)
        self._heard(s)
        await self._note_metrics_address(s.node_id, hello.facts.metrics_address)
        await self._note_reserved(s.node_id, hello.facts.reserved_hours)

    async def _note_reserved(self, node_id: str, hours: Iterable[int]) -> None:
        """Record the owner-reserved hours an agent declares when they differ from the node
        record's (an agent restarted with other ``--reserved-hours``); bad bins are ignored."""
        want = frozenset(h for h in hours if 0 <= h < 168)
        known = self._nodes.get(node_id)
        if known is None or known.reserved_hours == want:
            return

        def change(n: Node | None) -> Node | None:
            if n is None or n.reserved_hours == want:
                return None
            return replace(n, reserved_hours=want)

        await self.state.nodes.update(node_id, change, fence=self.fence())

    async def _note_metrics_address(self, node_id: str, address: str) -> None:
        """Record where the agent serves metrics when it differs from the node record (an
        agent restarted with another ``--metrics-listen``); the address was checked at
        enrollment's rules (``metrics_address_problem``) and is ignored when bad."""
        known = self._nodes.get(node_id)
        if known is None or known.metrics_address == address:
            return
        problem = metrics_address_problem(address)
        if problem:
            log.warning("node %s: metrics address ignored: %s", node_id, problem)
            return

        def change(n: Node | None) -> Node | None:
            if n is None or n.metrics_address == address:
                return None
            return replace(n, metrics_address=address)

        await self.state.nodes.update(node_id, change, fence=self.fence())

    async def on_heartbeat(
        self,
        s: Session,
        hb: pb.Heartbeat,
        ack: Callable[[pb.HeartbeatAck], None] | None = None,
    ) -> pb.HeartbeatAck:
        """Take a heartbeat: liveness in memory first, and the ack handed to ``ack`` before
        any store write (an agent's view of the link must not wait on an etcd round trip);
        then the node transition, replica statuses and the periodic usage refresh."""
        now = self.clock.monotonic()
        interval = self.config.interval_for(len(self.membership))
        HEARTBEATS.inc()
        if hb.network_state:
            self.network_states[s.node_id] = hb.network_state
        if s.last_beat and now - s.last_beat > 2 * interval:
            HEARTBEATS_LATE.inc()
        s.last_beat = now
        self.reliability.heartbeat(s.node_id, now, interval)
        node = self._nodes.get(s.node_id)
        if node is not None:
            self.reliability.usage(s.node_id, resources_from_pb(hb.usage), node.allocatable, now)
        transitions = self._heard(s)
        reply = pb.HeartbeatAck(seq=hb.seq, interval_s=interval)
        if self.trust is not None:
            self.trust.advise(s.node_id, hb, reply)
        if ack is not None:
            ack(reply)
        if self.trust is not None:
            await self.trust.record(s.node_id, hb, self.fence())
        await self._write_transitions(transitions)
        await self._apply_statuses(s, hb.replicas)
        await self._maybe_write_usage(s, hb)
        return reply

    async def on_goodbye(self, s: Session, bye: pb.Goodbye) -> None:
        """The agent stops cleanly and asks to be held (``Membership.goodbye``)."""
        hold = self.membership.goodbye(s.node_id, self.clock.monotonic(), bye.back_within_s)
        why = bye.reason or "no reason given"
        kept = f"; its replicas are kept for {hold:.0f}s" if hold > 0 else ""
        await self.emit("node", f"node {s.node_id}: agent stopping ({why}){kept}", node=s.node_id)

    async def on_leave(self, s: Session, leave: pb.Leave) -> None:
        """The agent is about to leave: record a ``leave`` departure on its node and set it
        draining in the same write (``departures.decide_departures`` takes it from there)."""
        now = self.clock.now()
        reason = leave.reason or "agent leaving"
        dep = Departure(DepartureKind.LEAVE, reason, now, now + leave.deadline_s)
        self.membership.leaving(s.node_id)

        def change(cur: Node | None) -> Node | None:
            if cur is None:
                return None
            if cur.departure is not None and cur.departure.kind is DepartureKind.LEAVE:
                return None  # announced already (a repeat after a reconnect)
            moved = cur.moved_to(NodeState.DRAINING)[0] or cur
            return replace(moved, departure=dep)

        rec = await self.state.nodes.update(s.node_id, change, fence=self.fence())
        if rec is not None and rec.value.departure == dep:
            await self.emit(
                "node",
                f"node {s.node_id}: leaving ({reason}); moving its replicas within "
                f"{leave.deadline_s:.0f}s",
                node=s.node_id,
                state=rec.value.state.value,
            )

    def _heard(self, s: Session) -> list[NodeTransition]:
        return self.membership.heartbeat(s.node_id, self.clock.monotonic())

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
                self.reliability.replica_outcome(
                    new.node_id, new.observed is ReplicaState.FAILED, self.clock.monotonic()
                )
            await self.emit(
                "replica",
                f"replica {new.id} on {new.node_id}: {seen.observed.value} -> {new.observed.value}"
                + (f" ({new.reason})" if new.reason else ""),
                replica=new.id,
                workload=new.workload,
                node=new.node_id,
                state=new.observed.value,
            )

    async def _maybe_write_usage(self, s: Session, hb: pb.Heartbeat) -> None:
        """A condition change is written at once; a periodic usage refresh is queued for
        ``_usage_loop``, which writes many nodes per transaction (``_write_node_batch``)."""
        now = self.clock.monotonic()
        conditions = conditions_from_pb(hb.conditions)
        active = tuple(conditions.active())
        refresh = usage_refresh_s(len(self.membership))
        if active == s.conditions and now - s.last_usage_write < refresh:
            return
        s.last_usage_write = now
        changed = active != s.conditions
        s.conditions = active
        usage = resources_from_pb(hb.usage)
        wall = self.clock.now()
        if not changed:
            self._usage_due[s.node_id] = (usage, conditions, wall)
            self._usage_event.set()
            return
        self._usage_due.pop(s.node_id, None)
        await self.state.nodes.update(
            s.node_id, _if_present(_with_usage(usage, conditions, wall)), fence=self.fence()
        )
        await self.emit(
            "node",
            f"node {s.node_id} conditions: {', '.join(active) or 'none'}",
            node=s.node_id,
        )

    # Usage refreshes wait this long to be written together (they are tens of seconds apart
    # per node, so half a second more is nothing; at 100 writes/s it makes batches of 50).
    USAGE_FLUSH_S = 0.5

    async def _usage_loop(self) -> None:
        """Write queued usage refreshes, up to ``Table.MAX_BATCH`` nodes per transaction,
        each compared against the revision the nodes watch last saw. A batch that loses a
        race (a user cordoned one of its nodes a moment ago) is written node by node."""
        while True:
            await self._usage_event.wait()
            self._usage_event.clear()
            due, self._usage_due = self._usage_due, {}
            await self._write_node_batch({n: _with_usage(u, c, w) for n, (u, c, w) in due.items()})
            await self.clock.sleep(self.USAGE_FLUSH_S)

    async def _write_node_batch(self, changes: dict[str, NodeChange]) -> None:
        """Apply ``changes`` to the nodes as the nodes watch last saw them, in transactions
        of up to ``Table.MAX_BATCH`` nodes compared against the watched revisions. A batch
        that loses a race (a user cordoned one of its nodes a moment ago) or whose outcome
        is unknown is written node by node (read, change, compare-and-swap)."""
        ids = sorted(changes)
        step = self.state.nodes.MAX_BATCH
        for i in range(0, len(ids), step):
            chunk = ids[i : i + step]
            items = [
                (n, changes[n](self._nodes[n]), self._node_revs[n])
                for n in chunk
                if n in self._nodes and n in self._node_revs
            ]
            try:
                if await self.state.nodes.cas_many(items, fence=self.fence()) is not None:
                    continue
            except (Fenced, NotLeader):
                raise
            except StoreError as e:  # OutcomeUnknown included: node by node re-reads
                log.info("batched write of %d nodes failed (%s); one by one", len(items), e)
            for n in chunk:
                try:
                    await self.state.nodes.update(n, _if_present(changes[n]), fence=self.fence())
                except (Fenced, NotLeader):
                    raise
                except StoreError as e:
                    log.warning("node %s not updated: %s", n, e)

    # ---- leader loops ----------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await self._write_transitions(self.membership.tick(self.clock.monotonic()))
            await self.clock.sleep(self.tick_s)

    async def _write_transitions(self, transitions: list[NodeTransition]) -> None:
        for t in transitions:
            wall = self.clock.now()
            try:
                if await self._write_transition_at_once(t, wall):
                    continue
            except (Fenced, NotLeader):
                raise
            except StoreError as e:  # OutcomeUnknown included: the path below re-reads
                log.info("transition of %s not written at once (%s); re-reading", t.node_id, e)

            def change(cur: Node | None, t: NodeTransition = t, wall: float = wall) -> Node | None:
                return None if cur is None else _moved(cur, t, wall)

            try:
                rec = await self.state.nodes.update(t.node_id, change, fence=self.fence())
            except (Fenced, NotLeader):
                raise
            except StoreError as e:
                log.warning("could not record %s -> %s for %s: %s", t.old, t.new, t.node_id, e)
                continue
            if rec is not None and rec.value.state is t.new:
                self._note_transition(t)
                await self.emit("node", _transition_message(t), node=t.node_id, state=t.new.value)

    async def _write_transition_at_once(self, t: NodeTransition, wall: float) -> bool:
        """The transition and its event in one transaction, against the node as the nodes
        watch last saw it (one round trip instead of a read, a write and an event: on a
        loaded leader each costs a turn of the event loop). False when the watched record is
        missing or stale, or refuses the move: the caller reads and retries."""
        cur, rev = self._nodes.get(t.node_id), self._node_revs.get(t.node_id)
        if cur is None or rev is None:
            return False
        moved = _moved(cur, t, wall)
        if moved is None or moved.state is not t.new:
            return False
        message = _transition_message(t)
        name, body = event("node", message, wall, node=t.node_id, state=t.new.value)
        nodes = self.state.nodes
        res = await fenced_txn(
            self.state.store,
            self.fence(),
            [nodes.unchanged(t.node_id, rev)],
            [
                nodes.put_op(t.node_id, moved),
                self.state.events.put_op(name, body),
            ],
        )
        if not res.succeeded:
            return False
        self._note_transition(t)
        log.info(message)
        return True

    def _note_transition(self, t: NodeTransition) -> None:
        mono = self.clock.monotonic()
        if t.new is NodeState.DEPARTED:
            self.reliability.away(t.node_id, mono)
        elif t.new in (NodeState.OFFLINE, NodeState.FAILED):
            self.reliability.down(t.node_id, mono)
        else:
            self.reliability.up(t.node_id, mono)

    async def _watch_replicas(self) -> None:
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

    async def _watch_workloads(self) -> None:
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

    def _take_nodes(self, listing: TableListing[Node]) -> None:
        """The nodes as listed, with the revisions batched writes compare against."""
        self._nodes = {r.name: r.value for r in listing.records}
        self._node_revs = {r.name: r.mod_revision for r in listing.records}

    async def _watch_nodes(self) -> None:
        """Follow the nodes table from ``_nodes_from`` (the revision after ``lead``'s
        listing); when restarted after an error, list again first."""
        start, self._nodes_from = self._nodes_from, None
        if start is None:
            nodes = await self.state.nodes.list()
            now = self.clock.monotonic()
            for r in nodes.records:
                self.membership.upsert(r.value, now)
            self._take_nodes(nodes)
            start = nodes.revision + 1
        async for ev in self.state.nodes.watch(start_revision=start):
            if ev.type is EventType.DELETE:
                self.membership.forget(ev.name)
                self._nodes.pop(ev.name, None)
                self._node_revs.pop(ev.name, None)
                self.reliability.forget(ev.name)
            elif ev.record is not None:
                self._nodes[ev.name] = ev.record.value
                self._node_revs[ev.name] = ev.record.mod_revision
                self.membership.upsert(ev.record.value, self.clock.monotonic())
                if ev.record.value.state is NodeState.DEPARTED:
                    self.reliability.away(ev.name, self.clock.monotonic())
                if ev.record.value.state is NodeState.REMOVED:
                    s = self.sessions.pop(ev.name, None)
                    if s:
                        # An empty set first: the removed node stops its containers.
                        s.generation += 1
                        s.outbox.put_nowait(
                            pb.CoordinatorMessage(
                                assignments=pb.Assignments(generation=s.generation)
                            )
                        )
                        s.closed = True
                        s.outbox.put_nowait(
                            pb.CoordinatorMessage(redirect=pb.Redirect(reason="node removed"))
                        )

    RELIABILITY_EVERY_S = 15.0

    async def _reliability_loop(self) -> None:
        """Write each node's reliability score when it moved by more than 0.02 (batched:
        when thousands of nodes join at once, thousands of scores move together)."""
        for node_id, n in self._nodes.items():
            if n.state in (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING):
                self.reliability.up(node_id, self.clock.monotonic())
        while True:
            await self.clock.sleep(self.RELIABILITY_EVERY_S)
            now = self.clock.monotonic()
            moved: dict[str, NodeChange] = {}
            for node_id, n in list(self._nodes.items()):
                score = round(self.reliability.score(node_id, now), 3)
                if abs(score - n.reliability) > 0.02:
                    moved[node_id] = _with_reliability(score)
            await self._write_node_batch(moved)

    def _mark(self, node_id: str) -> None:
        if node_id in self.sessions:
            self._dirty.add(node_id)
            self._dirty_event.set()

    async def _push_loop(self) -> None:
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

    def secrets_changed(self, names: set[str]) -> None:
        """Re-push the assignments of nodes running a replica that uses one of ``names``."""
        for node_id in list(self.sessions):
            for r in self._index.for_node(node_id):
                rec = self._index.workloads.get(r.workload)
                if rec is not None and any(ref.name in names for ref in rec.spec.secrets):
                    self._mark(node_id)
                    break

    def assignments_for(self, s: Session) -> pb.CoordinatorMessage:
        s.generation += 1
        out = []
        for r in self._index.for_node(s.node_id):
            rec = self._index.workloads.get(r.workload)
            if rec is None:
                continue
            values = {
                ref.name: v for ref in rec.spec.secrets if (v := self.secret_values(ref.name))
            }
            drop = rec.deleted and rec.delete_volumes
            out.append(assignment(r, rec.spec, values, drop_volumes=drop))
        msg = pb.Assignments(generation=s.generation, replicas=out)
        net = self.network_for(s.node_id)
        if net is not None:
            msg.network.CopyFrom(net)
        return pb.CoordinatorMessage(assignments=msg)

    # ---- logs ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def log_stream(
        self, replica_id: str, *, follow: bool, tail: int, request_id: str
    ) -> AsyncIterator[asyncio.Queue[pb.LogChunk]]:
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

    # ---- events ----------------------------------------------------------------------------

    SECURITY_EVENTS_PER_S = 20

    async def emit(self, kind: str, message: str, **fields: str) -> None:
        """Record an event in the store (and the log). Security refusals are rate-limited to
        ``SECURITY_EVENTS_PER_S`` so a flood of bad requests cannot become a flood of writes."""
        if kind == "security":
            second = int(self.clock.monotonic())
            if second != self._sec_window:
                self._sec_window, self._sec_count = second, 0
            self._sec_count += 1
            if self._sec_count > self.SECURITY_EVENTS_PER_S:
                return
        name, body = event(kind, message, self.clock.now(), **fields)
        log.info(message)
        try:
            await self.state.events.put(name, body)
        except StoreError as e:
            log.warning("event not recorded: %s (%s)", message, e)
