"""``GET /v1/volumes`` rows (pure) and their table rendering."""

from __future__ import annotations

from cloudless.cli import fmt
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.volumes import volume_rows
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.volumes import Volume
from cloudless.model.workload import WorkloadSpec

DB = WorkloadSpec(
    name="db",
    image="db:1",
    replicas=2,
    volumes=(Volume("data", "/data", 1 << 30), Volume("seed", "/seed", 0, True)),
)
WEB = WorkloadSpec(name="web", image="web:1")


def test_one_row_per_replica_volume_with_its_node() -> None:
    wls = [WorkloadRecord(spec=DB, version=1), WorkloadRecord(spec=WEB, version=1)]
    reps = [
        Replica("db-1", "db", "n2", observed=ReplicaState.LOST),
        Replica(
            "db-0",
            "db",
            "n1",
            observed=ReplicaState.RUNNING,
            volume_bytes=(("data", 3 << 20),),
            volume_quota=(("data", "image"), ("seed", "report: no size hint")),
        ),
        Replica("web-x1", "web", "n1"),  # no volumes: not listed
        Replica("db-extra", "db", "n3"),  # not an ordinal id: not a volume holder
    ]
    rows = volume_rows(wls, reps)
    assert [(r["name"], r["node_id"], r["replica_state"]) for r in rows] == [
        ("db-0/data", "n1", "running"),
        ("db-0/seed", "n1", "running"),
        ("db-1/data", "n2", "lost"),  # waiting for n2, which holds it
        ("db-1/seed", "n2", "lost"),
    ]
    assert (rows[0]["quota"], rows[0]["quota_note"]) == ("image", "")
    assert (rows[1]["quota"], rows[1]["quota_note"]) == ("report", "no size hint")
    assert (rows[2]["quota"], rows[2]["quota_note"]) == ("", "")  # db-1: not reported yet
    assert fmt.volume_row(rows[0], {"n1": "pi-kitchen"}) == [
        "db-0/data", "db", "pi-kitchen", "/data", "3Mi/1Gi", "image", "rw", "running"
    ]  # fmt: skip
    # not measured yet, no size hint, report-only; read-only
    assert fmt.volume_row(rows[1])[4:7] == ["?/-", "report", "ro"]
    assert fmt.volume_row(rows[2])[5] == "?"  # quota mode not reported yet
