"""The roll-out decider: which replicas move to the new spec now, and whether the roll-out is
complete, failed, or must roll back. Pure: a workload record and its replicas in, a plan out.

Rules (``kept``: the workload's replicas that are wanted running on a healthy node):

1. A replica on the new version is *healthy* when it runs and is ready (its readiness check
   passes, reported by its agent); without a readiness check it must also have run steadily
   for ``update.min_ready`` (a crash-looping version is briefly "running" after each restart).
2. While the roll-out of the current version progresses, a replica on it that failed, restarted,
   or is not healthy ``update.progress_deadline`` after the last batch was rolled, fails the
   roll-out. Then, with ``update.auto_rollback`` and an earlier spec to go back to, the plan is
   a rollback to the previous spec (a new version); otherwise the roll-out is marked failed and
   rolls no further. An automatic rollback is never judged: it restores what ran before, and
   stopping it half-way would leave two versions running (a node fault during it must not).
3. Otherwise the next batch: ``update.batch(replicas)`` minus the new-version replicas not yet
   healthy, taken from the stale ones in id order.
4. When nothing is stale and every replica is healthy, the roll-out is complete. A failure after
   that is the restart policy's business, not the roll-out's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.rollout import Rollout, RolloutState
from cloudless.model.workload import WorkloadSpec


@dataclass(frozen=True)
class Rollback:
    spec: WorkloadSpec
    from_version: int
    reason: str


@dataclass
class RolloutPlan:
    roll: list[Replica] = field(default_factory=list)
    status: Rollout | None = None  # the roll-out's new record, if it changed
    rollback: Rollback | None = None


def healthy(rec: WorkloadRecord, r: Replica, now: float) -> bool:
    if r.observed is not ReplicaState.RUNNING or not r.ready:
        return False
    if rec.spec.health.readiness is not None:
        return True
    return now - r.updated_at >= rec.spec.update.min_ready_s


def _why_bad(rec: WorkloadRecord, r: Replica, now: float) -> str | None:
    if r.observed is ReplicaState.FAILED and r.observed_version == rec.version:
        # (a failure its agent reported for the version it ran before does not count)
        return f"{r.id} failed on version {rec.version}" + (f" ({r.reason})" if r.reason else "")
    if r.restarts > 0:
        return f"{r.id} restarted {r.restarts} time(s) on version {rec.version}"
    waited = now - rec.rollout.batch_at
    if not healthy(rec, r, now) and waited > rec.spec.update.progress_deadline_s:
        detail = r.health or r.reason or r.observed.value
        return f"{r.id} not ready {waited:.0f}s after it was rolled ({detail})"
    return None


def decide_rollout(rec: WorkloadRecord, kept: list[Replica], now: float) -> RolloutPlan:
    ro = rec.rollout
    progressing = ro.state is RolloutState.PROGRESSING and ro.version == rec.version
    if ro.state is RolloutState.FAILED and ro.version == rec.version:
        return RolloutPlan()  # stopped: a new apply, an undo or a rollback moves on
    new = [r for r in kept if r.spec_version == rec.version]
    stale = [r for r in kept if r.spec_version != rec.version]
    if progressing and not ro.rollback_of:
        bad = [why for r in sorted(new, key=lambda r: r.id) if (why := _why_bad(rec, r, now))]
        if bad:
            reason = bad[0]
            if rec.spec.update.auto_rollback and not ro.rollback_of and rec.history:
                return RolloutPlan(rollback=Rollback(rec.history[-1].spec, rec.version, reason))
            return RolloutPlan(status=replace(ro, state=RolloutState.FAILED, reason=reason))
    unhealthy = [r for r in new if not healthy(rec, r, now)]
    if progressing and not stale and not unhealthy and len(new) >= rec.spec.replicas:
        return RolloutPlan(status=replace(ro, state=RolloutState.COMPLETE, reason=""))
    room = rec.spec.update.batch(rec.spec.replicas) - len(unhealthy)
    roll = sorted(stale, key=lambda r: r.id)[: max(0, room)]
    status = replace(ro, batch_at=now) if roll and progressing else None
    return RolloutPlan(roll=roll, status=status)
