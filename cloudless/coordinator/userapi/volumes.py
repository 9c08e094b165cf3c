"""``GET /v1/volumes``: the persistent volumes the cluster holds, one row per replica volume.

Pure: workload and replica records in, rows out. ``used_bytes`` is what the replica's agent
last measured (``None`` until it has). ``quota`` is how its agent holds it to the size hint:
``image`` (enforced: writes past it fail), ``report`` (usage only reported against it) or
``""`` (not reported yet); ``quota_note`` says why it is not enforced, or a note about the
image. A volume lives where its replica's record
places it (``stateful``), so the listing is derived from those records: a replica waiting for
its node shows that node and its ``lost`` state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloudless.coordinator.deciders.stateful import ordinal_of
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.model.replica import Replica


def volume_rows(
    workloads: Iterable[WorkloadRecord], replicas: Iterable[Replica]
) -> list[dict[str, Any]]:
    specs = {w.name: w.spec for w in workloads if w.spec.volumes}
    rows = []
    for r in sorted(replicas, key=lambda r: (r.workload, r.id)):
        spec = specs.get(r.workload)
        if spec is None or ordinal_of(r.workload, r.id) is None:
            continue
        quotas = dict(r.volume_quota)
        for v in spec.volumes:
            mode, _, note = quotas.get(v.name, "").partition(":")
            rows.append(
                {
                    "name": f"{r.id}/{v.name}",
                    "workload": r.workload,
                    "replica": r.id,
                    "volume": v.name,
                    "node_id": r.node_id,
                    "mount_path": v.mount_path,
                    "size_hint_bytes": v.size_bytes,
                    "read_only": v.read_only,
                    "replica_state": r.observed.value,
                    "used_bytes": dict(r.volume_bytes).get(v.name),  # None: not reported yet
                    "quota": mode.strip(),
                    "quota_note": note.strip(),
                }
            )
    return rows
