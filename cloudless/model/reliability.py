"""A node's reliability score, in [0, 1], from five measured components.

    score = 0.30*uptime + 0.20*response + 0.20*success + 0.15*capacity + 0.15*stability

Each component is already normalised to [0, 1] by whoever measures it (membership): uptime is
the fraction of the observation window the node was reachable, response is 1 for heartbeats
answered at or under the target latency falling linearly to 0 at 10x, success is the fraction
of replicas that ran without failing, capacity is how much headroom the node keeps, stability
is 1 minus the normalised rate of state flaps.
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHTS = {"uptime": 0.30, "response": 0.20, "success": 0.20, "capacity": 0.15, "stability": 0.15}


@dataclass(frozen=True, slots=True)
class ReliabilityComponents:
    uptime: float = 1.0
    response: float = 1.0
    success: float = 1.0
    capacity: float = 1.0
    stability: float = 1.0


def _clip(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def reliability_score(c: ReliabilityComponents) -> float:
    return (
        WEIGHTS["uptime"] * _clip(c.uptime)
        + WEIGHTS["response"] * _clip(c.response)
        + WEIGHTS["success"] * _clip(c.success)
        + WEIGHTS["capacity"] * _clip(c.capacity)
        + WEIGHTS["stability"] * _clip(c.stability)
    )


def response_component(latency_s: float, target_s: float) -> float:
    """1.0 at or under ``target_s``, falling linearly to 0.0 at ``10 * target_s``."""
    if latency_s <= target_s:
        return 1.0
    return _clip(1.0 - (latency_s - target_s) / (9.0 * target_s))
