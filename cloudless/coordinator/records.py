"""What the coordinator keeps per workload besides the spec itself."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cloudless.model.workload import WorkloadSpec, parse_workload
from cloudless.model.workload_codec import workload_to_dict


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

    @property
    def name(self) -> str:
        return self.spec.name

    def with_spec(self, spec: WorkloadSpec, at: float) -> WorkloadRecord:
        """The record after applying ``spec``. The version (what replicas run) changes only
        when something other than the replica count changed: scaling restarts nothing."""
        if spec == self.spec and not self.deleted:
            return self
        same_template = replace(spec, replicas=self.spec.replicas) == self.spec
        version = self.version if same_template else self.version + 1
        return replace(self, spec=spec, version=version, deleted=False, updated_at=at)

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
        )
