"""Per-node reliability, measured by the leader and fed to the scheduler.

``ReliabilityTracker`` is pure bookkeeping over events liveness already sees, with times
passed in. Components (each in [0, 1]; weights in ``cloudless.model.reliability``):

* uptime: the fraction of the observation window (``window_s``, default 1 h) the node was
  up (ready, cordoned or draining); a node seen for less than the window is judged on the
  part it was seen; time away after a planned departure (``away``) is not judged at all;
* response: from the gap between consecutive heartbeats versus the interval asked for
  (``response_component`` with the interval as the target: on time = 1, ten times late = 0),
  smoothed with an exponential moving average;
* success: replicas that ran without failing over all replica outcomes seen (starts with a
  prior of 1 success so a new node is not judged on one crash);
* capacity: the headroom left, 1 - max(cpu, memory) usage share of allocatable;
* stability: 1 - flaps / max_flaps, counting transitions to offline in the window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cloudless.model.reliability import (
    ReliabilityComponents,
    reliability_score,
    response_component,
)
from cloudless.model.resources import Resources

EMA = 0.2


@dataclass
class _NodeStats:
    since: float
    up: bool = False
    up_since: float = 0.0
    up_total: float = 0.0  # completed up periods inside the window (approximate)
    last_hb: float | None = None
    response: float = 1.0
    ok: int = 1
    failed: int = 0
    headroom: float = 1.0
    flaps: deque[float] = field(default_factory=deque)
    away_since: float | None = None


@dataclass
class ReliabilityTracker:
    window_s: float = 3600.0
    max_flaps: int = 6
    _nodes: dict[str, _NodeStats] = field(default_factory=dict)

    def _get(self, node_id: str, now: float) -> _NodeStats:
        s = self._nodes.get(node_id)
        if s is None:
            s = self._nodes[node_id] = _NodeStats(since=now)
        return s

    def up(self, node_id: str, now: float) -> None:
        s = self._get(node_id, now)
        if s.away_since is not None:  # back from a planned departure: skip the time away
            s.since += now - s.away_since
            s.away_since = None
        if not s.up:
            s.up, s.up_since = True, now

    def away(self, node_id: str, now: float) -> None:
        """A planned departure: not down, not a flap; the time until ``up`` is not judged."""
        s = self._get(node_id, now)
        if s.up:
            s.up_total += now - s.up_since
            s.up = False
        if s.away_since is None:
            s.away_since = now

    def down(self, node_id: str, now: float) -> None:
        s = self._get(node_id, now)
        if s.away_since is not None:
            return
        if s.up:
            s.up_total += now - s.up_since
            s.up = False
        s.flaps.append(now)

    def heartbeat(self, node_id: str, now: float, interval: float) -> None:
        s = self._get(node_id, now)
        if s.last_hb is not None and interval > 0:
            r = response_component(now - s.last_hb, interval * 1.5)
            s.response = (1 - EMA) * s.response + EMA * r
        s.last_hb = now

    def replica_outcome(self, node_id: str, failed: bool, now: float) -> None:
        s = self._get(node_id, now)
        if failed:
            s.failed += 1
        else:
            s.ok += 1

    def usage(self, node_id: str, used: Resources, allocatable: Resources, now: float) -> None:
        s = self._get(node_id, now)
        shares = [
            used.cpu_millis / allocatable.cpu_millis if allocatable.cpu_millis else 0.0,
            used.memory_bytes / allocatable.memory_bytes if allocatable.memory_bytes else 0.0,
        ]
        s.headroom = max(0.0, 1.0 - max(shares))

    def forget(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    def components(self, node_id: str, now: float) -> ReliabilityComponents:
        s = self._get(node_id, now)
        while s.flaps and s.flaps[0] < now - self.window_s:
            s.flaps.popleft()
        judged = now if s.away_since is None else s.away_since  # away: frozen where it left
        seen = min(self.window_s, max(1e-9, judged - s.since))
        up = s.up_total + (now - s.up_since if s.up else 0.0)
        return ReliabilityComponents(
            uptime=min(1.0, up / seen),
            response=s.response,
            success=s.ok / (s.ok + s.failed),
            capacity=s.headroom,
            stability=1.0 - min(1.0, len(s.flaps) / self.max_flaps),
        )

    def score(self, node_id: str, now: float) -> float:
        return reliability_score(self.components(node_id, now))
