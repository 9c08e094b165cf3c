"""What the coordinator keeps per workload besides the spec itself."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cloudless.model.rollout import Rollout, RolloutState
from cloudless.model.workload import WorkloadSpec, parse_workload
from cloudless.model.workload_codec import workload_to_dict

MAX_HISTORY = 10


@dataclass(frozen=True)
class Revision:
    """A spec the workload ran before: its version, when it was replaced, and why it went
    (``cause``: "applied", "rolled back: ...", "undo")."""

    version: int
    spec: WorkloadSpec
    replaced_at: float
    cause: str = "applied"

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "spec": workload_to_dict(self.spec),
            "replaced_at": self.replaced_at,
            "cause": self.cause,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Revision:
        return cls(
            int(d["version"]), parse_workload(d["spec"]), float(d.get("replaced_at", 0.0)),
            str(d.get("cause", "applied")),
        )  # fmt: skip


@dataclass(frozen=True)
class WorkloadRecord:
    """A workload as stored: the spec, a version bumped on every change of the spec, and
    whether the user deleted it (its replicas are stopped before the record goes)."""

    spec: WorkloadSpec
    version: int = 1
    deleted: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    unplaced: int = 0
    unplaced_reason: str = ""
    trace: str = ""  # W3C traceparent of the apply that wrote this version ("" untraced)
    history: tuple[Revision, ...] = ()  # earlier specs, newest last, at most MAX_HISTORY
    rollout: Rollout = Rollout()
    cause: str = "applied"  # why the current spec is the current one
    delete_volumes: bool = False  # deleted with --volumes: agents drop the replicas' data

    @property
    def name(self) -> str:
        return self.spec.name

    def with_spec(self, spec: WorkloadSpec, at: float) -> WorkloadRecord:
        """The record after applying ``spec``. The version (what replicas run) changes only
        when something other than the replica count changed: scaling restarts nothing."""
        if spec == self.spec and not self.deleted:
            return self
        same_template = replace(spec, replicas=self.spec.replicas) == self.spec
        if same_template:
            return replace(self, spec=spec, deleted=False, delete_volumes=False, updated_at=at)
        return self.next_version(spec, at)

    def next_version(
        self, spec: WorkloadSpec, at: float, cause: str = "applied", rollback_of: int = 0
    ) -> WorkloadRecord:
        """A new version running ``spec``; the current one goes to the history."""
        old = Revision(self.version, self.spec, at, self.cause)
        version = self.version + 1
        return replace(
            self,
            spec=spec,
            version=version,
            deleted=False,
            delete_volumes=False,
            updated_at=at,
            history=(*self.history, old)[-MAX_HISTORY:],
            rollout=Rollout(RolloutState.PROGRESSING, version, at, at, "", rollback_of),
            cause=cause,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": workload_to_dict(self.spec),
            "version": self.version,
            "deleted": self.deleted,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "unplaced": self.unplaced,
            "unplaced_reason": self.unplaced_reason,
            "trace": self.trace,
            "history": [r.to_dict() for r in self.history],
            "rollout": self.rollout.to_dict(),
            "cause": self.cause,
            "delete_volumes": self.delete_volumes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkloadRecord:
        return cls(
            spec=parse_workload(d["spec"], stored=True),
            version=int(d.get("version", 1)),
            deleted=bool(d.get("deleted", False)),
            created_at=float(d.get("created_at", 0.0)),
            updated_at=float(d.get("updated_at", 0.0)),
            unplaced=int(d.get("unplaced", 0)),
            unplaced_reason=str(d.get("unplaced_reason", "")),
            trace=str(d.get("trace", "")),
            history=tuple(Revision.from_dict(r) for r in d.get("history") or []),
            rollout=Rollout.from_dict(d.get("rollout") or {"version": d.get("version", 1)}),
            cause=str(d.get("cause", "applied")),
            delete_volumes=bool(d.get("delete_volumes", False)),
        )
