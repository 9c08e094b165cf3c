"""Removing an etcd member safely (pure): the checks etcd's strict reconfiguration applies.

Rules (``removal_refusal`` returns the first broken one, or None):

1. the member must exist;
2. it must not be the last voting member;
3. after the removal the remaining voting members must still hold a quorum of *healthy*
   ones: with ``n`` voters left, quorum is ``n // 2 + 1``. Learners do not vote and do not
   count. Removing an unhealthy member from a cluster whose healthy members still form a
   quorum of what is left is allowed (that is how a dead coordinator is cleared away).

Worked example: 3 voters a, b, c with c dead. Remove c: 2 left, quorum 2, healthy a, b -> ok.
Remove a: 2 left (b, c), quorum 2, healthy 1 -> refused.

Restarting a member (``restart_refusal``, to re-read its trusted-CA file): the *other* voting
members must hold a quorum of all ``n`` voters on their own while it is down (``n // 2 + 1``
healthy others). A cluster of one or two voters cannot keep a quorum through any restart; it
is allowed there (the store pauses for the restart) rather than never rotating.
Worked example: 3 voters, all healthy: restart a -> b, c healthy, 2 >= 2 -> ok; with c dead
-> 1 < 2 -> refused.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Voter:
    id: int
    name: str
    is_learner: bool = False


def removal_refusal(members: Sequence[Voter], healthy: Collection[int], target: int) -> str | None:
    victim = next((m for m in members if m.id == target), None)
    if victim is None:
        return f"etcd member {target:x} is not in the cluster"
    if victim.is_learner:
        return None
    voters = [m for m in members if not m.is_learner]
    left = [m for m in voters if m.id != target]
    if not left:
        return f"{victim.name} is the last voting etcd member: removing it would end the cluster"
    quorum = len(left) // 2 + 1
    alive = [m for m in left if m.id in healthy]
    if len(alive) < quorum:
        down = sorted(m.name for m in left if m.id not in healthy)
        return (
            f"removing {victim.name} would leave {len(left)} voting members of which "
            f"{len(alive)} are healthy (down: {', '.join(down)}); {quorum} are needed for a "
            "quorum: bring a member back first"
        )
    return None


def restart_refusal(members: Sequence[Voter], healthy: Collection[int], target: int) -> str | None:
    me = next((m for m in members if m.id == target), None)
    if me is None:
        return f"etcd member {target:x} is not in the cluster"
    voters = [m for m in members if not m.is_learner]
    if me.is_learner or len(voters) <= 2:
        return None
    quorum = len(voters) // 2 + 1
    others = [m for m in voters if m.id != target]
    alive = [m for m in others if m.id in healthy]
    if len(alive) < quorum:
        down = sorted(m.name for m in others if m.id not in healthy)
        return (
            f"restarting etcd member {me.name} now would leave {len(alive)} of {len(voters)} "
            f"voting members answering, below the quorum of {quorum} (down: {', '.join(down)}): "
            "waiting for them to come back"
        )
    return None
