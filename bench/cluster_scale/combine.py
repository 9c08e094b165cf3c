"""Combine separate runs of the load harness into ``bench/results/cluster_scale.json``:
``python -m bench.cluster_scale.combine run1.json run2.json run3.json``.

Each argument is a ``cluster_scale.json`` written by one ``python -m bench.cluster_scale``
run (the harness overwrites the file, so copy it after each run). The combined document
keeps every run whole under ``runs`` and adds ``spread``: for each headline figure at each
node count, the value of every run with its minimum, median and maximum, so the run-to-run
spread is reported next to every figure. ``python -m bench.cluster_scale.report`` renders
it as one table with a column per run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS

# (name, path inside a step) of the figures whose spread is reported
FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("scale-up seconds", ("grow", "seconds")),
    ("scale-up nodes/s", ("grow", "enroll_rate_per_s")),
    ("heartbeat cost cores", ("heartbeat_cost", "coordinator_cores")),
    ("heartbeat cost RSS MB", ("heartbeat_cost", "coordinator_rss_mb")),
    ("apply -> replica placed P50 s", ("scheduling", "per_replica_s", "p50")),
    ("apply -> replica placed P95 s", ("scheduling", "per_replica_s", "p95")),
    ("apply request P50 s", ("scheduling", "apply_request_s", "p50")),
    ("commit -> replica placed P50 s", ("scheduling", "commit_to_placed_s", "p50")),
    ("commit -> replica placed P95 s", ("scheduling", "commit_to_placed_s", "p95")),
    ("kill -9 -> offline P50 s", ("kill9", "offline_s", "p50")),
    ("death -> replacement running P50 s", ("reschedule", "replacement_running_s", "p50")),
    ("cut-off -> offline P50 s", ("cutoff", "offline_s", "p50")),
    ("cut-off -> offline P95 s", ("cutoff", "offline_s", "p95")),
    ("cut-off -> replacement running P50 s", ("cutoff", "replacement_running_s", "p50")),
    ("false alarms (offline + replaced)", ("false_alarms", "nodes_wrongly_offline")),
)


def _get(step: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = step
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """node count -> figure -> {"runs": [value per run], "min", "median", "max"}."""
    out: dict[str, dict[str, Any]] = {}
    sizes = sorted({st["nodes"] for r in runs for st in r.get("scale", {}).get("steps", [])})
    for n in sizes:
        steps = [
            next((st for st in r.get("scale", {}).get("steps", []) if st["nodes"] == n), {})
            for r in runs
        ]
        figs: dict[str, Any] = {}
        for name, path in FIGURES:
            vals = [_get(st, path) for st in steps]
            if name.startswith("false alarms"):
                vals = [
                    None
                    if v is None
                    else v + (_get(st, ("false_alarms", "replicas_needlessly_replaced")) or 0)
                    for v, st in zip(vals, steps, strict=True)
                ]
            got = [float(v) for v in vals if isinstance(v, int | float)]
            figs[name] = {
                "runs": vals,
                "min": min(got) if got else None,
                "median": statistics.median(got) if got else None,
                "max": max(got) if got else None,
            }
        out[str(n)] = figs
    return out


def combine(runs: list[dict[str, Any]], sources: list[str]) -> dict[str, Any]:
    return {
        "suite": "cluster_scale",
        "when": [r.get("when") for r in runs],
        "command": runs[0].get("command") if runs else None,
        "runs_from": sources,
        "runs": runs,
        "spread": spread(runs),
    }


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m bench.cluster_scale.combine RUN.json [RUN.json ...]")
    runs = [json.loads(Path(a).read_text()) for a in argv]
    out = RESULTS / "cluster_scale.json"
    out.write_text(json.dumps(combine(runs, argv), indent=1) + "\n")
    print(f"wrote {out} ({len(runs)} runs)")


if __name__ == "__main__":
    main(sys.argv[1:])
