"""Node liveness, decided in pure code from stream events, heartbeats and ticks.

The leader keeps one ``Membership`` in memory. It is fed ``heartbeat``/``disconnected`` events
and ``tick``s, each with the monotonic time, and returns the node-state transitions to write to
the store. Timers never touch the store: only transitions do.

Whether an agent is still there is mostly decided *below* Python (``cloudless.lib.keepalive``):
the agent's control stream ends when its process dies (the kernel closes the socket), when its
link is cut (a keepalive PING goes unacknowledged by the peer's kernel: TCP_USER_TIMEOUT), and
when its process has been frozen for several seconds (the PING goes unanswered). Membership
turns those stream ends into node states, and keeps a slower heartbeat rule as a backstop:

* a node whose control stream *ends* and does not reconnect within ``disconnect_grace_s``
  goes offline;
* a node whose stream stays open but whose heartbeats stop (an agent whose event loop hangs
  while its gRPC core still answers PINGs) goes offline after ``offline_after_s`` without a
  heartbeat;
* an offline node goes failed after ``failed_after_s`` more;
* a heartbeat brings it back (to cordoned if the user had cordoned it, else ready; a
  departed node to ready);
* a node whose agent announced it is leaving (a ``leave`` departure on its record) and
  whose stream then ends is ``departed`` after the same grace, not offline: a planned
  departure is neither a failure nor a flap;
* an agent that stops cleanly (``Goodbye``: an upgrade, a restart) is held for the time it
  asks for (at most ``MAX_HOLD_S``) before either rule applies; a killed one is not.

After a leader change every known node is treated as just heard from and as disconnected
``leader_grace_s - disconnect_grace_s`` from now: a node whose agent has not connected to the
new leader within ``leader_grace_s`` goes offline, and none is declared offline sooner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cloudless.model.departure import DepartureKind
from cloudless.model.node import Node, NodeState


@dataclass(frozen=True)
class MembershipConfig:
    # Heartbeats carry usage and replica statuses (statuses also go out at once on a change);
    # liveness comes from the stream itself, so they can be infrequent.
    heartbeat_interval_s: float = 2.0
    # The backstop: an open stream without heartbeats (5 intervals).
    offline_after_s: float = 10.0
    # A stream that ended: time for the agent to reconnect before its node is offline.
    disconnect_grace_s: float = 0.5
    failed_after_s: float = 60.0
    # Longer than the agents' reconnect backoff cap (5 s), so every agent finds a new
    # leader before it is judged.
    leader_grace_s: float = 8.0
    # Heartbeat intervals stretch as the cluster grows so the leader handles at most this
    # many heartbeats per second; the backstop stretches with them.
    max_heartbeats_per_s: float = 500.0

    def interval_for(self, node_count: int) -> float:
        """The heartbeat interval for a cluster of ``node_count`` nodes.

        2 s up to 1,000 nodes at the default rate (1,000 / 500 = 2), then linear:
        5,000 nodes -> 10 s.
        """
        return max(self.heartbeat_interval_s, node_count / self.max_heartbeats_per_s)

    def offline_after_for(self, node_count: int) -> float:
        """Silence that makes a node offline: ``offline_after_s`` at the base interval, the
        same number of missed intervals when the interval has been stretched."""
        factor = self.interval_for(node_count) / self.heartbeat_interval_s
        return self.offline_after_s * factor


@dataclass(frozen=True)
class NodeTransition:
    node_id: str
    old: NodeState
    new: NodeState
    reason: str


@dataclass
class _Liveness:
    state: NodeState
    cordoned: bool
    last_seen: float
    connected: bool = False
    disconnected_at: float = math.inf
    offline_since: float = math.inf
    held_until: float = -math.inf  # a clean stop: not judged before this
    leaving: bool = False  # announced a departure (``DepartureKind.LEAVE``)


_HEALTHY = (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING)
_WATCHED = frozenset((*_HEALTHY, NodeState.ENROLLING))
_RETURNS = frozenset((NodeState.ENROLLING, NodeState.OFFLINE, NodeState.FAILED, NodeState.DEPARTED))


def _leaving(n: Node) -> bool:
    return n.departure is not None and n.departure.kind is DepartureKind.LEAVE


@dataclass
class Membership:
    config: MembershipConfig = field(default_factory=MembershipConfig)
    _nodes: dict[str, _Liveness] = field(default_factory=dict)

    def load(self, nodes: list[Node], now: float) -> None:
        """Start tracking ``nodes`` as they are in the store (on becoming leader).

        Every node counts as heard from at ``now + leader_grace_s - offline_after`` and as
        disconnected at ``now + leader_grace_s - disconnect_grace_s``: a node whose agent does
        not connect within ``leader_grace_s`` goes offline then, and none goes sooner.
        """
        cfg = self.config
        after = cfg.offline_after_for(len(nodes))
        seen = now + max(0.0, cfg.leader_grace_s - after)
        gone = now + max(0.0, cfg.leader_grace_s - cfg.disconnect_grace_s)
        self._nodes = {}
        for n in nodes:
            if n.state is NodeState.REMOVED:
                continue
            live = _Liveness(n.state, n.state is NodeState.CORDONED, seen, disconnected_at=gone)
            if n.state in (NodeState.OFFLINE, NodeState.FAILED):
                live.offline_since = now
            live.leaving = _leaving(n)
            self._nodes[n.id] = live

    def upsert(self, node: Node, now: float) -> None:
        """Learn of a node (new enrollment) or of a user change (cordon, drain, removal)."""
        live = self._nodes.get(node.id)
        if node.state is NodeState.REMOVED:
            self._nodes.pop(node.id, None)
            return
        if live is None:
            live = _Liveness(node.state, node.state is NodeState.CORDONED, now)
            live.leaving = _leaving(node)
            self._nodes[node.id] = live
            return
        live.state = node.state
        live.leaving = _leaving(node)
        if node.state is NodeState.CORDONED:
            live.cordoned = True
        elif node.state is NodeState.READY:
            live.cordoned = False

    def leaving(self, node_id: str) -> None:
        """The node's agent announced it is leaving (before its record says so)."""
        live = self._nodes.get(node_id)
        if live is not None:
            live.leaving = True

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    def state(self, node_id: str) -> NodeState | None:
        live = self._nodes.get(node_id)
        return live.state if live else None

    def __len__(self) -> int:
        return len(self._nodes)

    def heartbeat(self, node_id: str, now: float) -> list[NodeTransition]:
        live = self._nodes.get(node_id)
        if live is None:
            return []
        live.last_seen = now
        live.connected = True
        live.disconnected_at = math.inf
        live.held_until = -math.inf
        if live.state in _RETURNS:
            old = live.state
            if old is NodeState.DEPARTED:
                live.cordoned = False
            live.state = NodeState.CORDONED if live.cordoned else NodeState.READY
            live.offline_since = math.inf
            why = "first heartbeat" if old is NodeState.ENROLLING else "heartbeat resumed"
            return [NodeTransition(node_id, old, live.state, why)]
        return []

    # The longest hold an agent may ask for when it stops cleanly.
    MAX_HOLD_S = 300.0

    def goodbye(self, node_id: str, now: float, back_within_s: float) -> float:
        """The agent is stopping cleanly and will be back within ``back_within_s`` (capped at
        ``MAX_HOLD_S``): the node is not judged offline before then. Returns the hold."""
        live = self._nodes.get(node_id)
        hold = min(max(0.0, back_within_s), self.MAX_HOLD_S)
        if live is not None:
            live.held_until = now + hold
        return hold

    def disconnected(self, node_id: str, now: float) -> None:
        live = self._nodes.get(node_id)
        if live is not None:
            live.connected = False
            live.disconnected_at = now

    def tick(self, now: float) -> list[NodeTransition]:
        """Transitions due at ``now``, in node-id order."""
        cfg = self.config
        after = cfg.offline_after_for(len(self._nodes))
        out: list[NodeTransition] = []
        silent_before = now - after
        gone_before = now - cfg.disconnect_grace_s
        for node_id, live in self._nodes.items():
            if live.state in _WATCHED:
                # Fast path (every node, ten times a second): nothing is due.
                if live.last_seen > silent_before and live.disconnected_at > gone_before:
                    continue
                if now < live.held_until:
                    continue  # stopped cleanly, coming back
                silent = now - live.last_seen
                gone = now - live.disconnected_at
                reason = ""
                if gone >= cfg.disconnect_grace_s and live.last_seen <= live.disconnected_at:
                    reason = f"connection lost {gone:.1f}s ago and not re-established"
                elif silent >= after:
                    reason = f"no heartbeat for {silent:.1f}s (limit {after:.1f}s)"
                if reason and live.leaving and gone >= cfg.disconnect_grace_s:
                    old = live.state
                    live.state = NodeState.DEPARTED
                    out.append(
                        NodeTransition(node_id, old, NodeState.DEPARTED, "left as announced")
                    )
                elif reason and live.state is not NodeState.ENROLLING:
                    old = live.state
                    live.state = NodeState.OFFLINE
                    live.offline_since = now
                    out.append(NodeTransition(node_id, old, NodeState.OFFLINE, reason))
            elif live.state is NodeState.OFFLINE and now - live.offline_since >= cfg.failed_after_s:
                live.state = NodeState.FAILED
                out.append(
                    NodeTransition(
                        node_id,
                        NodeState.OFFLINE,
                        NodeState.FAILED,
                        f"offline for {now - live.offline_since:.0f}s",
                    )
                )
        out.sort(key=lambda t: t.node_id)
        return out
