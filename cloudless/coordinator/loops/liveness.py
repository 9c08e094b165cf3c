"""``Liveness``: which nodes are alive, decided from stream events and written to the store.

The leader feeds it what the dispatcher's sessions see (a stream opened or closed, a hello,
a heartbeat, a goodbye); the pure ``Membership`` decides the node-state transitions, and
``Liveness`` writes them (each with its event, in one fenced transaction when the nodes
watch is current). It also owns the two kinds of batched node writes:

* usage refreshes: a condition change is written at once; a periodic refresh (every
  ``usage_refresh_s``, which stretches with the cluster so it costs at most
  ``MAX_USAGE_WRITES_PER_S`` writes per second) is queued and written up to
  ``Table.MAX_BATCH`` nodes per transaction;
* reliability scores (``ReliabilityTracker``), written when one moved by more than 0.02.

Batched writes compare each node against the revision the shared ``NodeView`` last saw; a
batch that loses a race is redone node by node. Liveness holds no session and pushes
nothing: heartbeats reach it through the dispatcher, and what it decides reaches everyone
else through the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from cloudless.api.convert import conditions_from_pb, resources_from_pb
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.deciders.membership import Membership, MembershipConfig, NodeTransition
from cloudless.coordinator.deciders.reliability import ReliabilityTracker
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState, event
from cloudless.coordinator.state.node_view import NodeView
from cloudless.lib.clock import Clock
from cloudless.model.departure import Departure, DepartureKind
from cloudless.model.node import Node, NodeConditions, NodeState
from cloudless.model.resources import Resources
from cloudless.network.nebula_keys import public_key_problem
from cloudless.observability.http import metrics_address_problem
from cloudless.observability.metrics import HEARTBEATS, HEARTBEATS_LATE
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence, fenced_txn

log = logging.getLogger("cloudless.coordinator.loops.liveness")

USAGE_REFRESH_S = 10.0
# Usage refreshes stretch as the cluster grows so they cost at most this many node writes
# per second (5,000 nodes: every 50 s). Condition changes are written at once regardless.
MAX_USAGE_WRITES_PER_S = 100.0


def usage_refresh_s(node_count: int) -> float:
    """Seconds between two usage writes of one node: 10 s up to 1,000 nodes, then linear."""
    return max(USAGE_REFRESH_S, node_count / MAX_USAGE_WRITES_PER_S)


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


@dataclass
class StreamBeats:
    """What liveness remembers of one stream (the dispatcher's session holds it)."""

    last_usage_write: float = -1e18
    conditions: tuple[str, ...] = ()
    last_beat: float = 0.0  # monotonic time of the last heartbeat (0: none yet)


class Liveness:
    # Usage refreshes wait this long to be written together (they are tens of seconds apart
    # per node, so half a second more is nothing; at 100 writes/s it makes batches of 50).
    USAGE_FLUSH_S = 0.5
    RELIABILITY_EVERY_S = 15.0

    def __init__(
        self,
        state: ClusterState,
        clock: Clock,
        view: NodeView,
        events: EventRecorder,
        config: MembershipConfig | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.state = state
        self.clock = clock
        self.view = view
        self.events = events
        self.config = config or MembershipConfig()
        self.tick_s = tick_s
        self.membership = Membership(self.config)
        self.reliability = ReliabilityTracker()
        self.fence_held: Fence | None = None  # set while leading
        self._usage_due: dict[str, tuple[Resources, NodeConditions, float]] = {}
        self._usage_event = asyncio.Event()

    def fence(self) -> Fence:
        """The term's fence; ``Fenced`` once the term's work has stopped."""
        if self.fence_held is None:
            raise Fenced("not the leader")
        return self.fence_held

    def start(self, fence: Fence, nodes: list[Node]) -> None:
        """A new term: judge ``nodes`` (as just listed) afresh, with no stream known."""
        self.fence_held = fence
        self.membership = Membership(self.config)
        self.membership.load(nodes, self.clock.monotonic())
        self._usage_due = {}

    def stop(self) -> None:
        self.fence_held = None

    def interval(self) -> float:
        """The heartbeat interval agents are told to keep (it stretches with the cluster)."""
        return self.config.interval_for(len(self.membership))

    # ---- what the dispatcher's sessions see ------------------------------------------------

    def connected(self, node: Node) -> StreamBeats:
        """A new stream from ``node`` (replacing any older one); what to hand back with
        each of its heartbeats."""
        if self.membership.state(node.id) is None:
            self.membership.upsert(node, self.clock.monotonic())
        return StreamBeats()

    def disconnected(self, node_id: str) -> None:
        """``node_id``'s current stream ended."""
        self.membership.disconnected(node_id, self.clock.monotonic())

    def heard(self, node_id: str) -> list[NodeTransition]:
        return self.membership.heartbeat(node_id, self.clock.monotonic())

    def beat(
        self, node_id: str, stream: StreamBeats, hb: pb.Heartbeat
    ) -> tuple[pb.HeartbeatAck, list[NodeTransition]]:
        """Take a heartbeat in memory (no store access): its ack, and the transitions it
        causes (for ``write_transitions``)."""
        now = self.clock.monotonic()
        interval = self.interval()
        HEARTBEATS.inc()
        if stream.last_beat and now - stream.last_beat > 2 * interval:
            HEARTBEATS_LATE.inc()
        stream.last_beat = now
        self.reliability.heartbeat(node_id, now, interval)
        node = self.view.nodes.get(node_id)
        if node is not None:
            self.reliability.usage(node_id, resources_from_pb(hb.usage), node.allocatable, now)
        transitions = self.heard(node_id)
        return pb.HeartbeatAck(seq=hb.seq, interval_s=interval), transitions

    async def goodbye(self, node_id: str, bye: pb.Goodbye) -> None:
        """The agent stops cleanly and asks to be held (``Membership.goodbye``)."""
        hold = self.membership.goodbye(node_id, self.clock.monotonic(), bye.back_within_s)
        why = bye.reason or "no reason given"
        kept = f"; its replicas are kept for {hold:.0f}s" if hold > 0 else ""
        await self.events.emit(
            "node", f"node {node_id}: agent stopping ({why}){kept}", node=node_id
        )

    async def leave(self, node_id: str, leave: pb.Leave) -> None:
        """The agent is about to leave: record a ``leave`` departure on its node and set it
        draining in the same write (``departures.decide_departures`` takes it from there)."""
        now = self.clock.now()
        reason = leave.reason or "agent leaving"
        dep = Departure(DepartureKind.LEAVE, reason, now, now + leave.deadline_s)
        self.membership.leaving(node_id)

        def change(cur: Node | None) -> Node | None:
            if cur is None:
                return None
            if cur.departure is not None and cur.departure.kind is DepartureKind.LEAVE:
                return None  # announced already (a repeat after a reconnect)
            moved = cur.moved_to(NodeState.DRAINING)[0] or cur
            return replace(moved, departure=dep)

        rec = await self.state.nodes.update(node_id, change, fence=self.fence())
        if rec is not None and rec.value.departure == dep:
            await self.events.emit(
                "node",
                f"node {node_id}: leaving ({reason}); moving its replicas within "
                f"{leave.deadline_s:.0f}s",
                node=node_id,
                state=rec.value.state.value,
            )

    def replica_outcome(self, node_id: str, failed: bool) -> None:
        """A replica on ``node_id`` reached running (or failed): counts for its reliability."""
        self.reliability.replica_outcome(node_id, failed, self.clock.monotonic())

    async def note_reserved(self, node_id: str, hours: Iterable[int]) -> None:
        """Record the owner-reserved hours an agent declares when they differ from the node
        record's (an agent restarted with other ``--reserved-hours``); bad bins are ignored."""
        want = frozenset(h for h in hours if 0 <= h < 168)
        known = self.view.nodes.get(node_id)
        if known is None or known.reserved_hours == want:
            return

        def change(n: Node | None) -> Node | None:
            if n is None or n.reserved_hours == want:
                return None
            return replace(n, reserved_hours=want)

        await self.state.nodes.update(node_id, change, fence=self.fence())

    async def note_metrics_address(self, node_id: str, address: str) -> None:
        """Record where the agent serves metrics when it differs from the node record (an
        agent restarted with another ``--metrics-listen``); the address was checked at
        enrollment's rules (``metrics_address_problem``) and is ignored when bad."""
        known = self.view.nodes.get(node_id)
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

    async def note_nebula_key(self, node_id: str, key: str) -> None:
        """Record the node's Nebula public key when it differs from the node record (an agent
        from before node-made keys, or one that lost its key and made a new one); a malformed
        key is ignored (logged), as enrollment refuses it."""
        known = self.view.nodes.get(node_id)
        if not key or known is None or known.nebula_public_key == key:
            return
        problem = public_key_problem(key)
        if problem:
            log.warning("node %s: Nebula public key ignored: %s", node_id, problem)
            return

        def change(n: Node | None) -> Node | None:
            if n is None or n.nebula_public_key == key:
                return None
            return replace(n, nebula_public_key=key)

        await self.state.nodes.update(node_id, change, fence=self.fence())

    async def maybe_write_usage(self, node_id: str, stream: StreamBeats, hb: pb.Heartbeat) -> None:
        """A condition change is written at once; a periodic usage refresh is queued for
        ``usage_loop``, which writes many nodes per transaction (``_write_node_batch``)."""
        now = self.clock.monotonic()
        conditions = conditions_from_pb(hb.conditions)
        active = tuple(conditions.active())
        refresh = usage_refresh_s(len(self.membership))
        if active == stream.conditions and now - stream.last_usage_write < refresh:
            return
        stream.last_usage_write = now
        changed = active != stream.conditions
        stream.conditions = active
        usage = resources_from_pb(hb.usage)
        wall = self.clock.now()
        if not changed:
            self._usage_due[node_id] = (usage, conditions, wall)
            self._usage_event.set()
            return
        self._usage_due.pop(node_id, None)
        await self.state.nodes.update(
            node_id, _if_present(_with_usage(usage, conditions, wall)), fence=self.fence()
        )
        await self.events.emit(
            "node",
            f"node {node_id} conditions: {', '.join(active) or 'none'}",
            node=node_id,
        )

    # ---- the nodes watch (``NodeListener``) ------------------------------------------------

    def nodes_listed(self, nodes: list[Node]) -> None:
        now = self.clock.monotonic()
        for n in nodes:
            self.membership.upsert(n, now)

    def node_changed(self, node_id: str, node: Node) -> None:
        self.membership.upsert(node, self.clock.monotonic())
        if node.state is NodeState.DEPARTED:
            self.reliability.away(node_id, self.clock.monotonic())

    def node_deleted(self, node_id: str) -> None:
        self.membership.forget(node_id)
        self.reliability.forget(node_id)

    # ---- leader loops ----------------------------------------------------------------------

    async def tick_loop(self) -> None:
        while True:
            await self.write_transitions(self.membership.tick(self.clock.monotonic()))
            await self.clock.sleep(self.tick_s)

    async def usage_loop(self) -> None:
        """Write queued usage refreshes, up to ``Table.MAX_BATCH`` nodes per transaction,
        each compared against the revision the nodes watch last saw. A batch that loses a
        race (a user cordoned one of its nodes a moment ago) is written node by node."""
        while True:
            await self._usage_event.wait()
            self._usage_event.clear()
            due, self._usage_due = self._usage_due, {}
            await self._write_node_batch({n: _with_usage(u, c, w) for n, (u, c, w) in due.items()})
            await self.clock.sleep(self.USAGE_FLUSH_S)

    async def reliability_loop(self) -> None:
        """Write each node's reliability score when it moved by more than 0.02 (batched:
        when thousands of nodes join at once, thousands of scores move together)."""
        for node_id, n in self.view.nodes.items():
            if n.state in (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING):
                self.reliability.up(node_id, self.clock.monotonic())
        while True:
            await self.clock.sleep(self.RELIABILITY_EVERY_S)
            now = self.clock.monotonic()
            moved: dict[str, NodeChange] = {}
            for node_id, n in list(self.view.nodes.items()):
                score = round(self.reliability.score(node_id, now), 3)
                if abs(score - n.reliability) > 0.02:
                    moved[node_id] = _with_reliability(score)
            await self._write_node_batch(moved)

    async def _write_node_batch(self, changes: dict[str, NodeChange]) -> None:
        """Apply ``changes`` to the nodes as the nodes watch last saw them, in transactions
        of up to ``Table.MAX_BATCH`` nodes compared against the watched revisions. A batch
        that loses a race (a user cordoned one of its nodes a moment ago) or whose outcome
        is unknown is written node by node (read, change, compare-and-swap)."""
        ids = sorted(changes)
        step = self.state.nodes.MAX_BATCH
        nodes, revs = self.view.nodes, self.view.revs
        for i in range(0, len(ids), step):
            chunk = ids[i : i + step]
            items = [(n, changes[n](nodes[n]), revs[n]) for n in chunk if n in nodes and n in revs]
            try:
                if await self.state.nodes.cas_many(items, fence=self.fence()) is not None:
                    continue
            except Fenced:
                raise
            except StoreError as e:  # OutcomeUnknown included: node by node re-reads
                log.info("batched write of %d nodes failed (%s); one by one", len(items), e)
            for n in chunk:
                try:
                    await self.state.nodes.update(n, _if_present(changes[n]), fence=self.fence())
                except Fenced:
                    raise
                except StoreError as e:
                    log.warning("node %s not updated: %s", n, e)

    async def write_transitions(self, transitions: list[NodeTransition]) -> None:
        for t in transitions:
            wall = self.clock.now()
            try:
                if await self._write_transition_at_once(t, wall):
                    continue
            except Fenced:
                raise
            except StoreError as e:  # OutcomeUnknown included: the path below re-reads
                log.info("transition of %s not written at once (%s); re-reading", t.node_id, e)

            def change(cur: Node | None, t: NodeTransition = t, wall: float = wall) -> Node | None:
                return None if cur is None else _moved(cur, t, wall)

            try:
                rec = await self.state.nodes.update(t.node_id, change, fence=self.fence())
            except Fenced:
                raise
            except StoreError as e:
                log.warning("could not record %s -> %s for %s: %s", t.old, t.new, t.node_id, e)
                continue
            if rec is not None and rec.value.state is t.new:
                self._note_transition(t)
                await self.events.emit(
                    "node", _transition_message(t), node=t.node_id, state=t.new.value
                )

    async def _write_transition_at_once(self, t: NodeTransition, wall: float) -> bool:
        """The transition and its event in one transaction, against the node as the nodes
        watch last saw it (one round trip instead of a read, a write and an event: on a
        loaded leader each costs a turn of the event loop). False when the watched record is
        missing or stale, or refuses the move: the caller reads and retries."""
        cur, rev = self.view.nodes.get(t.node_id), self.view.revs.get(t.node_id)
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
