"""Replicas: one running copy of a workload, with desired and observed state kept apart.

The coordinator owns ``desired`` (run or stop) and ``node_id`` (the assignment); the agent
owns ``observed``. Observed state only moves forward within one incarnation
(pending -> pulling -> starting -> running -> exited | failed); a restart by the agent starts
a new incarnation (``restarts`` + 1) and may go back to ``starting``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any


class DesiredState(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class ReplicaState(enum.StrEnum):
    PENDING = "pending"
    PULLING = "pulling"
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    LOST = "lost"  # its node went offline; the coordinator decides what to do

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def terminal(self) -> bool:
        return self in (ReplicaState.EXITED, ReplicaState.FAILED)


_RANK = {
    ReplicaState.PENDING: 0,
    ReplicaState.PULLING: 1,
    ReplicaState.STARTING: 2,
    ReplicaState.RUNNING: 3,
    ReplicaState.LOST: 4,
    ReplicaState.EXITED: 5,
    ReplicaState.FAILED: 5,
}


def advance(current: ReplicaState, observed: ReplicaState, same_incarnation: bool) -> bool:
    """Whether an observation may replace the current observed state."""
    if not same_incarnation:
        return True
    if current is ReplicaState.LOST:
        return True  # the node came back and reports the truth
    return observed.rank >= current.rank


@dataclass(frozen=True, slots=True)
class Replica:
    id: str
    workload: str
    node_id: str = ""
    desired: DesiredState = DesiredState.RUNNING
    observed: ReplicaState = ReplicaState.PENDING
    reason: str = ""
    exit_code: int | None = None
    restarts: int = 0
    spec_version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float = 0.0
    endpoint: str = ""  # "ip:port" where it serves, as its agent reports
    trace: str = ""  # W3C traceparent of the decision that created it ("" untraced)
    ready: bool = False  # running and passing its readiness check, as its agent reports
    health: str = ""  # why it is not ready / was restarted by its liveness check
    volume_bytes: tuple[tuple[str, int], ...] = ()  # (volume, bytes used), sorted by name
    volume_quota: tuple[tuple[str, str], ...] = ()  # (volume, quota text), sorted by name
    observed_version: int = 0  # the spec version the agent's last applied status was about

    def with_observed(
        self, state: ReplicaState, *, reason: str = "", exit_code: int | None = None, at: float
    ) -> Replica:
        return replace(self, observed=state, reason=reason, exit_code=exit_code, updated_at=at)

    def advance(self, report: Replica) -> Replica | None:
        """This replica with the agent-owned fields of ``report`` (its observed state, reason,
        exit code, restarts, start time, endpoint, readiness and health, volume usage, the
        spec version it was about, and when it was seen), or ``None`` when the
        report would move observed state backward within one incarnation (same ``restarts``
        and about the same spec version, see ``advance`` above): a late or reordered report,
        to be dropped. A report about another spec version is another container (an update
        replaces it and its restart count starts over), so it may start over. The
        coordinator-owned fields (assignment, desired state, spec version) are kept."""
        same = report.restarts == self.restarts and report.observed_version == self.observed_version
        if not advance(self.observed, report.observed, same):
            return None
        return replace(
            self,
            observed=report.observed,
            reason=report.reason,
            exit_code=report.exit_code,
            restarts=report.restarts,
            started_at=report.started_at,
            updated_at=report.updated_at,
            endpoint=report.endpoint,
            ready=report.ready,
            health=report.health,
            volume_bytes=report.volume_bytes,
            volume_quota=report.volume_quota,
            observed_version=report.observed_version,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workload": self.workload,
            "node_id": self.node_id,
            "desired": self.desired.value,
            "observed": self.observed.value,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "restarts": self.restarts,
            "spec_version": self.spec_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "endpoint": self.endpoint,
            "trace": self.trace,
            "ready": self.ready,
            "health": self.health,
            "volume_bytes": dict(self.volume_bytes),
            "volume_quota": dict(self.volume_quota),
            "observed_version": self.observed_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Replica:
        return cls(
            id=d["id"],
            workload=d["workload"],
            node_id=d.get("node_id", ""),
            desired=DesiredState(d.get("desired", "running")),
            observed=ReplicaState(d.get("observed", "pending")),
            reason=d.get("reason", ""),
            exit_code=d.get("exit_code"),
            restarts=int(d.get("restarts", 0)),
            spec_version=int(d.get("spec_version", 0)),
            created_at=float(d.get("created_at", 0.0)),
            updated_at=float(d.get("updated_at", 0.0)),
            started_at=float(d.get("started_at", 0.0)),
            endpoint=str(d.get("endpoint", "")),
            trace=str(d.get("trace", "")),
            ready=bool(d.get("ready", False)),
            observed_version=int(d.get("observed_version", 0)),
            health=str(d.get("health", "")),
            volume_bytes=tuple(
                sorted((str(k), int(v)) for k, v in (d.get("volume_bytes") or {}).items())
            ),
            volume_quota=tuple(
                sorted((str(k), str(v)) for k, v in (d.get("volume_quota") or {}).items())
            ),
        )
