"""The layout decider (``cloudless.objectstore.assign``): how long it takes and how much a
join moves.

* Timing: 256 partitions on 50 nodes in 5 and 50 zones and on 100 nodes in 10 zones (R=3,
  capacities 1-5): a first layout, then adding a node and removing one, ``ROUNDS`` times
  each (min and max).
* Joins: random clusters (seeded) of up to ``--max-nodes`` nodes, R 1-3, 1-4 zones, each
  joined by 3 nodes one after the other; counts the joins that moved more than 1.1x what the
  joiner ends up holding (the issue's bound) and the worst excess.

Run from the repo root: ``python -m bench.objectstore.layout [--joins N] [--seed S]``
-> ``bench/results/objectstore_layout.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import time
from typing import Any

from bench.common import write_results
from cloudless.objectstore.assign import assign
from cloudless.objectstore.layout import NodeRole

ROUNDS = 3
SIZES = [(50, 5, 3), (50, 50, 3), (100, 10, 3)]
CAPACITIES = [1, 2, 3, 5, 8, 100, 1000]


def timing() -> list[dict[str, Any]]:
    out = []
    for nodes, zones, r in SIZES:
        roles = {f"n{i:03d}": NodeRole(f"z{i % zones}", 1 + (i * 7919) % 5) for i in range(nodes)}
        took: dict[str, list[float]] = {"first": [], "add": [], "remove": []}
        for _ in range(ROUNDS):
            t = time.perf_counter()
            first = assign(roles, r)
            took["first"].append(time.perf_counter() - t)
            t = time.perf_counter()
            grown = assign({**roles, "new": NodeRole("z0", 3)}, r, first.partitions)
            took["add"].append(time.perf_counter() - t)
            t = time.perf_counter()
            gone = "n007"
            shrunk = assign({k: v for k, v in roles.items() if k != gone}, r, first.partitions)
            took["remove"].append(time.perf_counter() - t)
        out.append(
            {
                "nodes": nodes,
                "zones": zones,
                "replication": r,
                **{f"{k}_s": [round(min(v), 3), round(max(v), 3)] for k, v in took.items()},
                "add_moves": len(grown.moves),
                "add_holds": grown.counts()["new"],
                "remove_moves": len(shrunk.moves),
                "remove_lost": first.counts()[gone],
            }
        )
        print(out[-1])
    return out


def joins(count: int, seed: int, max_nodes: int) -> dict[str, Any]:
    rng = random.Random(seed)
    over: list[dict[str, Any]] = []
    total = 0
    while total < count:
        r = rng.randint(1, 3)
        zones = rng.randint(1, 4)
        n = rng.randint(r, max_nodes)
        roles = {
            f"n{i}": NodeRole(f"z{rng.randint(0, zones - 1)}", rng.choice(CAPACITIES))
            for i in range(n)
        }
        plan = assign(roles, r)
        for step in range(3):
            zone = rng.choice([*sorted({x.zone for x in roles.values()}), "znew"])
            name = f"new{step}"
            roles = {**roles, name: NodeRole(zone, rng.choice(CAPACITIES))}
            plan = assign(roles, r, plan.partitions)
            holds = plan.counts()[name]
            total += 1
            if len(plan.moves) > holds + holds // 10:
                over.append({"replication": r, "moves": len(plan.moves), "holds": holds})
    return {
        "joins": total,
        "seed": seed,
        "max_nodes": max_nodes,
        "over_1_1x": len(over),
        "worst_extra_moves": max((o["moves"] - o["holds"] for o in over), default=0),
        "cases": over,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--joins", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-nodes", type=int, default=8)
    args = ap.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    load_before = os.getloadavg()[0]
    data: dict[str, Any] = {"commit": commit, "cpus": os.cpu_count()}
    data["timing"] = timing()
    data["random_joins"] = joins(args.joins, args.seed, args.max_nodes)
    data["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print({k: v for k, v in data["random_joins"].items() if k != "cases"})
    write_results("objectstore_layout", data)


if __name__ == "__main__":
    main()
