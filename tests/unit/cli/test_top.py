"""``cloudless top`` tables: busiest first by the chosen column, unmeasured rows last."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.cli.top_cmd import NodeSort, ReplicaSort, node_table, replica_table

MiB = 1 << 20


def row(rid: str, cpu: int, mem: int, restarts: int = 0, **kw: Any) -> dict[str, Any]:
    return {
        "id": rid, "node_id": "n1", "restarts": restarts, "measured": True, "cpu_millis": cpu,
        "memory_bytes": mem, "memory_limit_bytes": 64 * MiB, "disk_read_bps": 0,
        "disk_write_bps": 0, "net_rx_bps": -1, "net_tx_bps": -1, **kw,
    }  # fmt: skip


ROWS = [
    row("a", 100, 50 * MiB, restarts=3),
    row("b", 900, 10 * MiB, disk_write_bps=2 * MiB),
    {"id": "c", "node_id": "n2", "restarts": 9, "measured": False},
]


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        (ReplicaSort.CPU, ["b", "a", "c"]),  # 900 > 100; c unmeasured goes last
        (ReplicaSort.MEMORY, ["a", "b", "c"]),  # 50 MiB > 10 MiB
        (ReplicaSort.DISK, ["b", "a", "c"]),  # 2 MiB/s > 0
        (ReplicaSort.RESTARTS, ["a", "b", "c"]),  # 3 > 0; c's 9 is not measured usage
        (ReplicaSort.NAME, ["a", "b", "c"]),
    ],
)
def test_replica_sort(sort: ReplicaSort, order: list[str]) -> None:
    assert [r[0] for r in replica_table(ROWS, sort, {"n1": "box"})] == order


def test_replica_cells() -> None:
    b, _, c = replica_table(ROWS, ReplicaSort.CPU, {"n1": "box"})
    # 10 MiB of a 64 MiB limit = 16%; network not measured (host network) shows "-".
    assert b == ["b", "box", "900m", "10Mi / 64Mi", "16%", "0B/s / 2Mi/s", "-", "0"]
    assert c == ["c", "n2", "-", "-", "-", "-", "-", "9"]


def test_node_sort_and_cells() -> None:
    base = {
        "state": "ready", "cpu_allocatable_millis": 2000, "memory_allocatable_bytes": 4096 * MiB,
        "replicas_cpu_millis": 350, "replicas_memory_bytes": 40 * MiB,
    }  # fmt: skip
    rows = [
        {**base, "id": "n1", "name": "one", "cpu_millis": 500, "memory_bytes": 3072 * MiB,
         "replicas": 2},
        {**base, "id": "n2", "name": "", "cpu_millis": 1500, "memory_bytes": 1024 * MiB,
         "replicas": 5},
    ]  # fmt: skip
    assert [r[0] for r in node_table(rows, NodeSort.CPU)] == ["n2", "one"]
    assert [r[0] for r in node_table(rows, NodeSort.MEMORY)] == ["one", "n2"]
    # 1500 of 2000 millis = 75%; 1 GiB of 4 GiB = 25%.
    assert node_table(rows, NodeSort.REPLICAS)[0] == [
        "n2", "ready", "1500m", "75%", "1Gi", "25%", "5", "350m / 40Mi",
    ]  # fmt: skip
