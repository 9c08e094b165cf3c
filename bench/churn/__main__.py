"""``python -m bench.churn``: writes bench/results/churn.json.

A simulated week (after a week of history the availability models learn from) of a home
fleet (4 servers, 8 laptops, 6 IoT boards, 6 phones; no device above 90% available) running
services with R = 1..5 replicas, once per placement policy: today's scorer, plain spread
(over nodes) and availability-aware. Planned departures announced 5 min ahead (a ``leave``
departure: the real departure rules move the replicas make-before-break, deadline at the
moment the device goes) and, side by side on the same traces, not announced. The real
reconciler and scheduler make every decision (cloudless/churn/sim.py). ``planned`` sums, per
policy, the replica-hours lost after planned departures and over the whole week, announced
vs not, with their ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from bench.common import write_results
from cloudless.churn.fleet import DEFAULT_MIX, fleet, services
from cloudless.churn.sim import ChurnSim, SimConfig
from cloudless.churn.target import AvailabilityPlacer
from cloudless.churn.traces import WEEK_S
from cloudless.coordinator.deciders.placer import SchedulerPlacer
from cloudless.coordinator.deciders.reconcile import Placer
from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler import Scheduler


def policies() -> dict[str, tuple[Placer, list[WorkloadSpec]]]:
    """Today's scorer; plain spread (even over the sites, max skew 1, then by score); the
    availability-aware placer. Every service also has max_per_node 1."""
    return {
        "score": (SchedulerPlacer(Scheduler()), services()),
        "spread": (SchedulerPlacer(Scheduler()), services(spread_key="zone")),
        "availability": (AvailabilityPlacer(Scheduler()), services()),
    }


def run(seed: int, announce_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (placer, svcs) in policies().items():
        nodes, traces = fleet(random.Random(seed))
        t0 = time.perf_counter()
        sim = ChurnSim(traces, nodes, svcs, placer, SimConfig(announce_s=announce_s))
        res = sim.run()
        res["wall_s"] = time.perf_counter() - t0
        res["reconcile_rounds"] = sim.reconciles
        out[name] = res
        r3 = res["R3"]
        print(
            f"seed {seed} announce {announce_s:g}s {name}: R=3 any {r3['availability_any']:.5f}"
            f" quorum {r3['availability_quorum']:.5f} moves/day {r3['moves_per_day']:.1f}"
            f" ({res['wall_s']:.1f}s)",
            flush=True,
        )
    return out


FIGURES = (
    "availability_any",
    "availability_quorum",
    "moves_per_day",
    "replicas_lost_at_planned_departures",
    "outage_after_planned_departure_s",
    "replica_hours_lost",
    "replica_hours_lost_after_planned_departures",
)


def planned(runs: dict[str, Any]) -> dict[str, Any]:
    """Per policy, summed over services and seeds: replica-hours lost (after planned
    departures, and in all) and replicas still on a leaving device, announced vs not."""
    out: dict[str, Any] = {}
    seeds = list(runs.values())
    for policy in seeds[0]["announced"]:
        row: dict[str, Any] = {}
        for mode in ("announced", "not_announced"):
            per_r = [s[mode][policy][r] for s in seeds for r in s[mode][policy] if r[0] == "R"]
            for f in (
                "replica_hours_lost_after_planned_departures",
                "replica_hours_lost",
                "replicas_lost_at_planned_departures",
            ):
                row[f"{f}_{mode}"] = sum(x[f] * x["services"] for x in per_r)
        for f in ("replica_hours_lost_after_planned_departures", "replica_hours_lost"):
            a, n = row[f"{f}_announced"], row[f"{f}_not_announced"]
            row[f"{f}_ratio_announced_to_not"] = a / n if n else None
        out[policy] = row
    return out


def summary(runs: dict[str, Any]) -> dict[str, Any]:
    """Mean over seeds, per announcement mode, policy and replica count; worst availability
    over seeds and services."""
    out: dict[str, Any] = {}
    seeds = list(runs.values())
    for mode in ("announced", "not_announced"):
        for policy in seeds[0][mode]:
            for r in (k for k in seeds[0][mode][policy] if k.startswith("R")):
                rows = [s[mode][policy][r] for s in seeds]
                row = {f: sum(x[f] for x in rows) / len(rows) for f in FIGURES}
                row["worst_availability_any"] = min(x["worst_availability_any"] for x in rows)
                row["worst_availability_quorum"] = min(x["worst_availability_quorum"] for x in rows)
                out.setdefault(mode, {}).setdefault(policy, {})[r] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    _, traces = fleet(random.Random(0))
    avail = {d: t.availability(WEEK_S, 2 * WEEK_S) for d, t in traces.items()}
    out: dict[str, Any] = {
        "command": "python -m bench.churn",
        "fleet": dict(DEFAULT_MIX),
        "device_availability_seed0": {
            "max": max(avail.values()),
            "mean": sum(avail.values()) / len(avail),
        },
        "window": "1 simulated week after 1 week of history",
        "runs": {},
    }
    for seed in range(args.seeds):
        out["runs"][str(seed)] = {
            "announced": run(seed, 300.0),
            "not_announced": run(seed, 0.0),
        }
    out["summary"] = summary(out["runs"])
    out["planned"] = planned(out["runs"])
    write_results("churn", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
