"""Removing an etcd member never leaves the rest without a healthy quorum."""

from __future__ import annotations

import pytest

from cloudless.clusterops.quorum import Voter, removal_refusal

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
