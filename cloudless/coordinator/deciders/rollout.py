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
3. Otherwise, in place (no ``max_surge``, an automatic rollback, or stale replicas whose spec
   is the current one, as after an undo: those are relabelled, not restarted): the next batch,
   ``update.batch(replicas)`` minus the new-version replicas not yet healthy, taken from the
   stale ones in id order.
4. Start first (``max_surge`` > 0): stale replicas count as available. Retire (stop) the stale
   ones, in id order, that leave at least ``replicas - max_unavailable`` available (healthy new
   plus stale); then start new ones (``surge``, placed by the reconciler) up to
   ``replicas + max_surge`` in all, and never more new ones than ``replicas``.
   Example, 3 replicas, max_surge 1, max_unavailable 0: start 1 new (4 in all); once it is
   healthy, 4 available - 3 = 1 stale retired and 1 more new started; and so on.
5. When nothing is stale and every replica is healthy, the roll-out is complete. A failure after
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
    roll: list[Replica] = field(default_factory=list)  # moved to the new version in place
    status: Rollout | None = None  # the roll-out's new record, if it changed
    rollback: Rollback | None = None
    surge: int = 0  # new replicas to start on the new version (start first)
    retire: list[Replica] = field(default_factory=list)  # stale replicas to stop (start first)


def surging(rec: WorkloadRecord) -> bool:
    """Whether the current roll-out starts new replicas before stopping old ones."""
    ro = rec.rollout
    return (
        rec.spec.update.max_surge > 0
        and not rec.spec.volumes
        and ro.state is RolloutState.PROGRESSING
        and ro.version == rec.version
        and not ro.rollback_of
    )


def _same_template_versions(rec: WorkloadRecord) -> set[int]:
    """Earlier versions whose spec runs the same containers as the current one."""
    flat = replace(rec.spec, replicas=0)
    return {h.version for h in rec.history if replace(h.spec, replicas=0) == flat}


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
    if surging(rec):
        relabel = _same_template_versions(rec)
        in_place = [r for r in stale if r.spec_version in relabel]
        if not in_place:
            return _start_first(rec, new, stale, len(unhealthy), now)
        stale = in_place
    room = rec.spec.update.batch(rec.spec.replicas) - len(unhealthy)
    roll = sorted(stale, key=lambda r: r.id)[: max(0, room)]
    status = replace(ro, batch_at=now) if roll and progressing else None
    return RolloutPlan(roll=roll, status=status)


def _start_first(
    rec: WorkloadRecord, new: list[Replica], stale: list[Replica], unhealthy: int, now: float
) -> RolloutPlan:
    want, u = rec.spec.replicas, rec.spec.update
    available = len(new) - unhealthy + len(stale)
    retire_n = max(0, min(len(stale), available - (want - u.max_unavailable)))
    retire = sorted(stale, key=lambda r: r.id)[:retire_n]
    total = len(new) + len(stale) - retire_n
    surge = max(0, min(want + u.max_surge - total, want - len(new)))
    status = replace(rec.rollout, batch_at=now) if surge else None
    return RolloutPlan(status=status, surge=surge, retire=retire)
