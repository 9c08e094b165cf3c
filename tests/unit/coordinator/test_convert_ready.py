"""Readiness from agent statuses: what the hub writes on the replica record."""

from __future__ import annotations

import pytest

from cloudless.api.convert import observe
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.model.replica import Replica, ReplicaState


@pytest.mark.parametrize(
    ("state", "ready", "reports", "want"),
    [
        ("running", True, True, True),
        ("running", False, True, False),  # failing its readiness check
        ("starting", True, True, False),  # only a running replica is ready
        ("running", False, False, True),  # an older agent: running means ready
        ("failed", False, False, False),
    ],
)
def test_ready(state: str, ready: bool, reports: bool, want: bool) -> None:
    r = Replica("web-1", "web", "n1", spec_version=2)
    s = pb.ReplicaStatus(
        replica_id="web-1", state=state, ready=ready, reports_ready=reports, spec_version=2,
        health="" if ready else "readiness http GET :80/: HTTP 503",
    )  # fmt: skip
    new = observe(r, s, now=5.0)
    assert new is not None and new.ready is want and new.observed is ReplicaState(state)
    assert new.observed_version == 2
    assert observe(new, s, now=6.0) is None  # nothing changed: no write


def test_volume_quota_modes_reach_the_record_and_round_trip() -> None:
    r = Replica("db-0", "db", "n1", spec_version=1)
    s = pb.ReplicaStatus(
        replica_id="db-0", state="running", reports_ready=True, ready=True, spec_version=1,
        volume_quota={"seed": "report: no size hint", "data": "image"},
    )  # fmt: skip
    new = observe(r, s, now=5.0)
    assert new is not None
    assert new.volume_quota == (("data", "image"), ("seed", "report: no size hint"))
    assert observe(new, s, now=6.0) is None  # unchanged: no write
    s.volume_quota["data"] = "report: quotas are off on this agent (--no-volume-quota)"
    assert observe(new, s, now=7.0) is not None  # a mode change is a change
    assert Replica.from_dict(new.to_dict()) == new
