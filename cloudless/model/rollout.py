"""How a changed spec rolls out, and what the coordinator records about it.

    update:
      max_unavailable: 1      # replicas rolled at once (0: a quarter of them, at least one)
      max_surge: 1            # start new replicas first, up to this many over the count
      progress_deadline: 2m   # a rolled replica not ready by then fails the roll-out
      min_ready: 10s          # without a readiness check: how long it must run steadily
      auto_rollback: true     # a failed roll-out goes back to the previous spec

A batch is done when each of its replicas runs the new spec and is ready (its readiness check
passes; without one, it has run ``min_ready`` seconds). A replica that fails, restarts, or is not
ready within ``progress_deadline`` fails the roll-out: it stops, and rolls back automatically.

Without ``max_surge`` replicas are replaced in place (stop first, like Swarm's default order):
at most ``batch()`` of them are down at once. With ``max_surge`` > 0 (start first, like a
Kubernetes Deployment's ``maxSurge``) new replicas start on other slots before old ones stop:
at most ``replicas + max_surge`` exist, and at least ``replicas - max_unavailable`` are
available (``max_unavailable`` 0 then means none may be missing). Workloads with volumes always
roll in place: a replica keeps its identity and its volume.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cloudless.model.health_codec import Add, duration_field

MAX_DEADLINE_S = 86400.0


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    max_unavailable: int = 0
    progress_deadline_s: float = 120.0
    min_ready_s: float = 10.0
    auto_rollback: bool = True
    max_surge: int = 0

    def batch(self, replicas: int) -> int:
        """In-place roll-outs: how many replicas may be rolled (down) at once."""
        return self.max_unavailable or max(1, replicas // 4)


class RolloutState(enum.StrEnum):
    NONE = "none"  # never changed since created
    PROGRESSING = "progressing"
    COMPLETE = "complete"
    FAILED = "failed"  # stopped; nothing to roll back to, or the rollback itself failed


@dataclass(frozen=True, slots=True)
class Rollout:
    """The roll-out of ``version``. ``batch_at``: when the last batch was rolled (for the
    progress deadline). ``rollback_of``: the version this one undoes automatically (it does not
    roll back in turn)."""

    state: RolloutState = RolloutState.NONE
    version: int = 1
    started_at: float = 0.0
    batch_at: float = 0.0
    reason: str = ""
    rollback_of: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "version": self.version,
            "started_at": self.started_at,
            "batch_at": self.batch_at,
            "reason": self.reason,
            "rollback_of": self.rollback_of,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        return cls(
            state=RolloutState(d.get("state", "none")),
            version=int(d.get("version", 1)),
            started_at=float(d.get("started_at", 0.0)),
            batch_at=float(d.get("batch_at", 0.0)),
            reason=str(d.get("reason", "")),
            rollback_of=int(d.get("rollback_of", 0)),
        )


_FIELDS = {"max_unavailable", "max_surge", "progress_deadline", "min_ready", "auto_rollback"}


def parse_update(v: Any, path: str, add: Add) -> UpdatePolicy:
    if v is None:
        return UpdatePolicy()
    if not isinstance(v, dict):
        add(path, f"expected a mapping, got {type(v).__name__}")
        return UpdatePolicy()
    for k in v:
        if k not in _FIELDS:
            add(f"{path}.{k}", f"unknown field (known: {', '.join(sorted(_FIELDS))})")
    mu = v.get("max_unavailable", 0)
    if isinstance(mu, bool) or not isinstance(mu, int) or not 0 <= mu <= 10_000:
        add(f"{path}.max_unavailable", f"{mu!r} is not a whole number 0-10000")
        mu = 0
    ms = v.get("max_surge", 0)
    if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= 10_000:
        add(f"{path}.max_surge", f"{ms!r} is not a whole number 0-10000")
        ms = 0
    ar = v.get("auto_rollback", True)
    if not isinstance(ar, bool):
        add(f"{path}.auto_rollback", f"{ar!r} is not true or false")
        ar = True
    return UpdatePolicy(
        max_unavailable=mu,
        progress_deadline_s=duration_field(
            v.get("progress_deadline"), f"{path}.progress_deadline", add, 1.0, MAX_DEADLINE_S, 120.0
        ),
        min_ready_s=duration_field(v.get("min_ready"), f"{path}.min_ready", add, 0.0, 3600.0, 10.0),
        auto_rollback=ar,
        max_surge=ms,
    )


def update_to_dict(u: UpdatePolicy) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_unavailable": u.max_unavailable,
        "progress_deadline": u.progress_deadline_s,
        "min_ready": u.min_ready_s,
        "auto_rollback": u.auto_rollback,
    }
    if u.max_surge:  # absent when unset, so agents that predate it still parse the spec
        out["max_surge"] = u.max_surge
    return out
