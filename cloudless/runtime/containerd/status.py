"""containerd's view of a container (record + task) as our ``ContainerStatus``. Pure."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cloudless.api.gen.containerd.types.task import task_pb2
from cloudless.runtime.containerd.stats import process_start_time
from cloudless.runtime.types import ContainerState, ContainerStatus

LABEL_OOM = "io.cloudless.oom-killed"  # set once an exit is attributed to the OOM killer
LABEL_IMAGE = "io.cloudless.image"  # the ref as the spec gave it (containerd normalises it)


def to_status(
    record: Any, proc: Any | None, *, oom_seen: bool, started_at: float | None
) -> ContainerStatus:
    """No task or a created task -> created; stopped -> exited (with code and OOM verdict);
    running/paused -> running; anything else -> unknown. Our private labels are stripped."""
    labels = dict(record.labels)
    oom = labels.pop(LABEL_OOM, "") == "true" or oom_seen
    image = labels.pop(LABEL_IMAGE, record.image)
    created = record.created_at.ToDatetime().timestamp() if record.HasField("created_at") else None
    st = ContainerStatus(
        id=record.id,
        image=image,
        state=ContainerState.CREATED,
        labels=labels,
        created_at=created,
        started_at=started_at,
    )
    if proc is None or proc.status == task_pb2.CREATED:
        return st
    if proc.status == task_pb2.STOPPED:
        return replace(
            st,
            state=ContainerState.EXITED,
            exit_code=proc.exit_status,
            oom_killed=oom,
            finished_at=proc.exited_at.ToDatetime().timestamp(),
        )
    if proc.status in (task_pb2.RUNNING, task_pb2.PAUSED, task_pb2.PAUSING):
        started = started_at or process_start_time(proc.pid)
        return replace(st, state=ContainerState.RUNNING, pid=proc.pid, started_at=started)
    return replace(st, state=ContainerState.UNKNOWN, reason="containerd reports UNKNOWN")
