"""Runs of the load harness combined with their spread, and rendered a column per run."""

from __future__ import annotations

from typing import Any

from bench.cluster_scale.combine import combine
from bench.cluster_scale.report import markdown


def run(p50: float, cut: float, offline: int) -> dict[str, Any]:
    return {
        "when": "t",
        "command": "python -m bench.cluster_scale --nodes 5000 --no-failover",
        "scale": {
            "steps": [
                {
                    "nodes": 5000,
                    "scheduling": {"per_replica_s": {"n": 50, "p50": p50, "p95": 2 * p50}},
                    "cutoff": {"method": "iptables", "offline_s": {"n": 5, "p50": cut, "p95": cut}},
                    "false_alarms": {
                        "freezes": 50,
                        "nodes_wrongly_offline": offline,
                        "replicas_needlessly_replaced": 1,
                    },
                }
            ]
        },
    }


def test_spread_per_figure_and_a_column_per_run() -> None:
    doc = combine([run(0.2, 1.8, 0), run(0.1, 2.3, 2), run(0.3, 1.9, 0)], ["a", "b", "c"])
    fig = doc["spread"]["5000"]
    assert fig["apply -> replica placed P50 s"] == {
        "runs": [0.2, 0.1, 0.3],
        "min": 0.1,
        "median": 0.2,
        "max": 0.3,
    }
    assert fig["cut-off -> offline P50 s"]["median"] == 1.9
    assert fig["false alarms (offline + replaced)"]["runs"] == [1, 3, 1]
    assert fig["kill -9 -> offline P50 s"] == {
        "runs": [None] * 3,
        "min": None,
        "median": None,
        "max": None,
    }
    table = markdown(doc)
    header, _, *rows = table.splitlines()
    assert header.count("run ") == 3
    placed = next(r for r in rows if r.startswith("| scheduling: apply -> each replica placed"))
    assert (
        "200 ms / 400 ms" in placed and "100 ms / 200 ms" in placed and "300 ms / 600 ms" in placed
    )
