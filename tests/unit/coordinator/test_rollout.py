"""The roll-out decider: batches gated on readiness, failure, automatic rollback. Pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloudless.coordinator.deciders.rollout import decide_rollout
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.rollout import RolloutState, UpdatePolicy
from cloudless.model.workload import WorkloadSpec

R = ReplicaState
NOW = 1000.0
READY_CHECK = HealthChecks(readiness=Probe(ProbeKind.EXEC, command=("true",)))


def record(replicas: int = 4, **update: object) -> WorkloadRecord:
    """Version 1 (web:1) replaced by version 2 (web:2) at t=900: roll-out progressing."""
    v1 = WorkloadSpec(
        name="web",
        image="web:1",
        replicas=replicas,
        health=READY_CHECK,
        update=UpdatePolicy(**update),  # type: ignore[arg-type]
    )
    rec = WorkloadRecord(spec=v1, version=1)
    return rec.next_version(replace(v1, image="web:2"), at=900.0)


def rep(i: int, version: int, observed: ReplicaState = R.RUNNING, **kw: object) -> Replica:
    kw.setdefault("ready", True)
    kw.setdefault("observed_version", version)
    return Replica(f"web-{i}", "web", f"n{i}", observed=observed, spec_version=version, **kw)  # type: ignore[arg-type]


def ids(rs: list[Replica]) -> list[str]:
    return [r.id for r in rs]


def test_first_batch_and_next_only_when_ready() -> None:
    rec = record(4)  # batch max(1, 4 // 4) = 1
    plan = decide_rollout(rec, [rep(i, 1) for i in range(4)], NOW)
    assert ids(plan.roll) == ["web-0"] and plan.status is not None and plan.status.batch_at == NOW
    # web-0 on v2, running but not ready yet: in flight, room 1 - 1 = 0
    kept = [rep(0, 2, ready=False), *[rep(i, 1) for i in range(1, 4)]]
    assert decide_rollout(rec, kept, NOW).roll == []
    # ready: the next one goes
    kept[0] = rep(0, 2)
    assert ids(decide_rollout(rec, kept, NOW).roll) == ["web-1"]


def test_max_unavailable_sets_the_batch() -> None:
    rec = record(4, max_unavailable=3)
    assert ids(decide_rollout(rec, [rep(i, 1) for i in range(4)], NOW).roll) == [
        "web-0", "web-1", "web-2"
    ]  # fmt: skip


def test_complete_when_all_new_and_ready() -> None:
    rec = record(2)
    plan = decide_rollout(rec, [rep(0, 2), rep(1, 2)], NOW)
    assert plan.status is not None and plan.status.state is RolloutState.COMPLETE
    done = replace(rec, rollout=plan.status)
    # afterwards a crash is the restart policy's business: no failure, no rollback
    assert decide_rollout(done, [rep(0, 2, R.FAILED), rep(1, 2)], NOW).status is None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (rep(0, 2, R.FAILED, reason="exit code 3"), "web-0 failed on version 2 (exit code 3)"),
        (rep(0, 2, restarts=1), "web-0 restarted 1 time(s) on version 2"),
        # rolled at 900, progress deadline 60 s, now 1000: 100 s without being ready
        (
            rep(0, 2, ready=False, health="readiness exec true: exit 1"),
            "web-0 not ready 100s after it was rolled (readiness exec true: exit 1)",
        ),
    ],
)
def test_a_failing_batch_rolls_back_to_the_previous_spec(bad: Replica, reason: str) -> None:
    rec = record(4, progress_deadline_s=60.0)
    plan = decide_rollout(rec, [bad, *[rep(i, 1) for i in range(1, 4)]], NOW)
    assert plan.roll == []  # nothing more goes to the broken version
    assert plan.rollback is not None
    assert plan.rollback.spec.image == "web:1" and plan.rollback.from_version == 2
    assert plan.rollback.reason == reason


def test_a_failure_reported_for_the_old_version_does_not_count() -> None:
    # web-0 was rolled to v2, but its agent's last status (FAILED) was about v1: it crashed
    # just before the new assignment arrived. Not a failure of v2 (a fix for a crash loop
    # must not be rolled back because of the crash loop it fixes).
    rec = record(4)
    stale_failure = rep(0, 2, R.FAILED, observed_version=1, ready=False)
    plan = decide_rollout(rec, [stale_failure, *[rep(i, 1) for i in range(1, 4)]], NOW - 95)
    assert plan.rollback is None and plan.status is None


def test_not_ready_within_the_deadline_is_not_a_failure_yet() -> None:
    rec = record(4, progress_deadline_s=120.0)  # 100 s since the batch < 120 s
    plan = decide_rollout(rec, [rep(0, 2, ready=False), *[rep(i, 1) for i in range(1, 4)]], NOW)
    assert plan.rollback is None and plan.roll == [] and plan.status is None


def test_without_auto_rollback_or_as_a_rollback_it_stops_failed() -> None:
    rec = record(2, auto_rollback=False)
    plan = decide_rollout(rec, [rep(0, 2, R.FAILED), rep(1, 1)], NOW)
    assert plan.rollback is None and plan.status is not None
    assert plan.status.state is RolloutState.FAILED and "web-0 failed" in plan.status.reason
    # a failed roll-out rolls no further
    stopped = replace(rec, rollout=plan.status)
    assert decide_rollout(stopped, [rep(0, 2, R.FAILED), rep(1, 1)], NOW).roll == []
    # an automatic rollback is not judged: it goes on (no rollback of the rollback, no stop)
    back = record(2).next_version(record(2).history[-1].spec, 950.0, rollback_of=2)
    plan = decide_rollout(back, [rep(0, 3, R.FAILED), rep(1, 2)], NOW)
    assert plan.rollback is None and ids(plan.roll) == []  # room 1 - 1 unhealthy = 0
    plan = decide_rollout(back, [rep(0, 3, restarts=2), rep(1, 2)], NOW)
    assert plan.rollback is None and ids(plan.roll) == ["web-1"]


def test_without_readiness_check_min_ready_gates() -> None:
    rec = record(4)
    rec = replace(rec, spec=replace(rec.spec, health=HealthChecks()))
    # running and ready (no check) since 995: 5 s < min_ready 10 s -> still in flight
    kept = [rep(0, 2, updated_at=995.0), *[rep(i, 1) for i in range(1, 4)]]
    assert decide_rollout(rec, kept, NOW).roll == []
    kept[0] = rep(0, 2, updated_at=985.0)  # 15 s
    assert ids(decide_rollout(rec, kept, NOW).roll) == ["web-1"]


def test_history_keeps_the_last_ten() -> None:
    rec = record(1)
    for i in range(3, 15):
        rec = rec.next_version(replace(rec.spec, image=f"web:{i}"), float(i))
    assert len(rec.history) == 10 and rec.history[-1].version == rec.version - 1
    assert WorkloadRecord.from_dict(rec.to_dict()) == rec


# Start first (max_surge): (replicas, max_surge, max_unavailable, new ready, new not ready,
# stale) -> (surge, retired), with the arithmetic: available = ready new + stale;
# retire = min(stale, available - (replicas - max_unavailable));
# surge = min(replicas + max_surge - (all - retired), replicas - new).
SURGE = [
    # 3, +1, 0 down: start 1 new first (4 in all); nothing retired while it is not ready.
    (3, 1, 0, 0, 0, 3, 1, 0),  # available 3 - 3 = 0 retired; 3 + 1 - 3 = 1 new
    (3, 1, 0, 0, 1, 3, 0, 0),  # in flight: 3 + 1 - 4 = 0
    (3, 1, 0, 1, 0, 3, 1, 1),  # ready: 4 - 3 = 1 retired; 4 - 3 = 1 more new
    # 2 ready new, 1 stale: 3 available - 3 = 0 retired; min(3 + 1 - 3, 3 - 2) = 1 new.
    (3, 1, 0, 2, 0, 1, 1, 0),
    # 3, +1, 1 down: 1 retired and 2 new at once (3 + 1 - 2 = 2).
    (3, 1, 1, 0, 0, 3, 2, 1),
    # 4, +2, 0 down: 2 new first, then 2 for 2.
    (4, 2, 0, 0, 0, 4, 2, 0),
    (4, 2, 0, 2, 0, 4, 2, 2),  # 6 available - 4 = 2 retired; 4 + 2 - 4 = 2 new
    # Never more new ones than replicas: 2 new of 2, 1 stale left: retire it, start none.
    (2, 3, 0, 2, 0, 1, 0, 1),
]


@pytest.mark.parametrize(
    ("want", "surge", "down", "ready", "unready", "stale", "start", "retired"), SURGE
)
def test_start_first_table(
    want: int, surge: int, down: int, ready: int, unready: int, stale: int, start: int,
    retired: int,
) -> None:  # fmt: skip
    rec = record(want, max_surge=surge, max_unavailable=down)
    kept = [
        *[rep(i, 2) for i in range(ready)],
        *[rep(10 + i, 2, ready=False) for i in range(unready)],
        *[rep(20 + i, 1) for i in range(stale)],
    ]
    plan = decide_rollout(rec, kept, NOW)
    assert (plan.surge, len(plan.retire), plan.roll) == (start, retired, [])
    assert ids(plan.retire) == [f"web-{20 + i}" for i in range(retired)]  # oldest ids first


def test_start_first_relabels_replicas_already_on_the_current_spec() -> None:
    """An undo back to version 1 (as version 3): replicas still on version 1 run the same
    containers, so they are rolled in place (relabelled), not surged."""
    rec = record(2, max_surge=1)
    undone = rec.next_version(rec.history[-1].spec, at=950.0)
    assert undone.version == 3
    plan = decide_rollout(undone, [rep(0, 1), rep(1, 1)], NOW)
    assert ids(plan.roll) == ["web-0"] and plan.surge == 0 and plan.retire == []
