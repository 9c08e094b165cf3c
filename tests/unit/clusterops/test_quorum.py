"""Removing an etcd member never leaves the rest without a healthy quorum."""

from __future__ import annotations

import pytest

from cloudless.clusterops.quorum import Voter, removal_refusal, restart_refusal

A, B, C, D, E = (Voter(i, n) for i, n in enumerate("abcde", start=1))
L = Voter(9, "learner", is_learner=True)

# (members, healthy ids, target, refusal fragment or None)  -- the arithmetic
CASES = [
    ([A, B, C], {1, 2, 3}, 3, None),  # 2 left, quorum 2, 2 healthy
    ([A, B, C], {1, 2}, 3, None),  # clearing away dead c: 2 left, quorum 2, a b healthy
    ([A, B, C], {1, 3}, 1, "1 are healthy"),  # 2 left (b, c), quorum 2, only c... b down
    ([A, B, C], {1, 2}, 1, "down: c"),  # removing healthy a with c dead: b alone < 2
    ([A, B], {1, 2}, 2, None),  # 1 left, quorum 1, healthy 1
    ([A], {1}, 1, "last voting"),  # the last member
    ([A, B, C, D, E], {1, 2, 3}, 4, None),  # 4 left, quorum 3, healthy 3 (a b c)
    ([A, B, C, D, E], {1, 2, 3}, 1, "2 are healthy"),  # 4 left, quorum 3, healthy 2 (b c)
    ([A, B, C, L], {1, 2, 3}, 9, None),  # learners do not vote: always removable
    ([A, L], {1, 9}, 1, "last voting"),  # a learner does not make a quorum
    ([A, B], {1, 2}, 7, "not in the cluster"),
]


@pytest.mark.parametrize(("members", "healthy", "target", "refusal"), CASES)
def test_removal(members: list[Voter], healthy: set[int], target: int, refusal: str | None) -> None:
    why = removal_refusal(members, healthy, target)
    if refusal is None:
        assert why is None
    else:
        assert why is not None and refusal in why


# Restarting a member (to re-read its trusted-CA file): the *others* must hold a quorum of
# all n voters while it is down.  (members, healthy ids, target, refusal fragment or None)
RESTARTS = [
    ([A, B, C], {1, 2, 3}, 1, None),  # n 3, quorum 2, others b c healthy: 2 >= 2
    ([A, B, C], {1, 2}, 1, "1 of 3 voting members answering"),  # c dead: b alone < 2
    ([A, B, C], {1, 2}, 3, None),  # restarting dead c itself: a b = 2 >= 2
    ([A, B, C, D, E], {1, 2, 3, 4}, 1, None),  # n 5, quorum 3, others b c d = 3
    ([A, B, C, D, E], {1, 2, 3}, 1, "down: d, e"),  # others b c = 2 < 3
    ([A], {1}, 1, None),  # one voter: no restart keeps a quorum; allowed (store pauses)
    ([A, B], {1}, 1, None),  # two voters: same
    ([A, B, C, L], {1, 2, 3}, 9, None),  # a learner does not vote
    ([A, B, C], {1, 2, 3}, 7, "not in the cluster"),
]


@pytest.mark.parametrize(("members", "healthy", "target", "refusal"), RESTARTS)
def test_restart(members: list[Voter], healthy: set[int], target: int, refusal: str | None) -> None:
    why = restart_refusal(members, healthy, target)
    if refusal is None:
        assert why is None
    else:
        assert why is not None and refusal in why
