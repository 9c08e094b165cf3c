"""``Replica.advance``: observed state only moves forward within one incarnation."""

from __future__ import annotations

import pytest

from cloudless.model.replica import DesiredState, Replica, ReplicaState

R = ReplicaState
BASE = Replica("web-1", "web", node_id="n1", spec_version=3, observed=R.RUNNING, restarts=2)


@pytest.mark.parametrize(
    ("current", "restarts_now", "reported", "restarts_reported", "applied"),
    [
        # forward within the incarnation (ranks: pending 0 < pulling 1 < starting 2 <
        # running 3 < lost 4 < exited = failed 5)
        (R.PULLING, 2, R.RUNNING, 2, True),  # 1 -> 3
        (R.RUNNING, 2, R.RUNNING, 2, True),  # 3 -> 3: same state, newer details
        (R.RUNNING, 2, R.FAILED, 2, True),  # 3 -> 5
        (R.EXITED, 2, R.FAILED, 2, True),  # 5 -> 5
        # backward within the incarnation: dropped
        (R.RUNNING, 2, R.PULLING, 2, False),  # 3 -> 1
        (R.RUNNING, 2, R.PENDING, 2, False),  # 3 -> 0
        (R.FAILED, 2, R.STARTING, 2, False),  # 5 -> 2, a late report of the start
        # a new incarnation (restarts changed) may start over
        (R.FAILED, 2, R.STARTING, 3, True),
        # lost (the coordinator's verdict): the node came back and reports the truth
        (R.LOST, 2, R.PULLING, 2, True),
    ],
)
def test_advance(
    current: ReplicaState,
    restarts_now: int,
    reported: ReplicaState,
    restarts_reported: int,
    applied: bool,
) -> None:
    cur = Replica("web-1", "web", node_id="n1", observed=current, restarts=restarts_now)
    report = Replica(
        "web-1", "web", node_id="n1", observed=reported, restarts=restarts_reported, reason="r"
    )
    moved = cur.advance(report)
    assert (moved is not None) is applied
    if moved is not None:
        assert (moved.observed, moved.restarts, moved.reason) == (
            reported,
            restarts_reported,
            "r",
        )


def test_a_report_about_the_new_version_starts_over() -> None:
    """The old version's container failed (restarts 0, about v2) while the replica was
    already at v3; the v3 container then runs with restarts 0: another container, so its
    running replaces the old one's failed (found by the simulator, chaos seed 3)."""
    cur = Replica(
        "web-1", "web", node_id="n1", spec_version=3, observed=R.FAILED, observed_version=2
    )
    report = Replica("web-1", "web", node_id="n1", observed=R.RUNNING, observed_version=3)
    moved = cur.advance(report)
    assert moved is not None and (moved.observed, moved.observed_version) == (R.RUNNING, 3)
    # the same version's late report is still dropped
    late = Replica("web-1", "web", node_id="n1", observed=R.STARTING, observed_version=2)
    assert cur.advance(late) is None


def test_advance_keeps_what_the_coordinator_owns() -> None:
    report = Replica(
        "web-1",
        "web",
        node_id="n9",  # the agent does not move a replica
        desired=DesiredState.STOPPED,
        spec_version=9,
        observed=R.EXITED,
        restarts=2,
        exit_code=0,
        endpoint="10.0.0.1:80",
        updated_at=5.0,
    )
    moved = BASE.advance(report)
    assert moved is not None
    assert (moved.node_id, moved.desired, moved.spec_version) == ("n1", DesiredState.RUNNING, 3)
    assert (moved.observed, moved.exit_code, moved.endpoint, moved.updated_at) == (
        R.EXITED,
        0,
        "10.0.0.1:80",
        5.0,
    )
