"""CPU time (user + sys) of fresh ``cloudless`` processes from two source trees, side by side:
``python -m bench.cli_startup BEFORE_TREE AFTER_TREE [--rounds N] [--cached]``.

Each case is one process of the venv's interpreter with ``PYTHONPATH`` set to the tree; the
trees alternate each round, the order flipping every round. The daemon cases import the
daemon's modules and then stop at a bad flag: what a ``cloudless coordinator`` or ``agent``
spends before it starts work. Without ``--cached`` the environment is used as given (where
``PYTHONDONTWRITEBYTECODE=1`` is set, every process compiles the cloudless modules it
imports); with it, bytecode is kept in a cache directory per tree, filled by one untimed round.
Prints a markdown table: median (min-max) per tree and the ratio after/before.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CASES: dict[str, list[str]] = {
    "`cloudless version`": ["-m", "cloudless", "version"],
    "`cloudless --help`": ["-m", "cloudless", "--help"],
    "`cloudless token create` (to its first request)": [
        "-m", "cloudless", "token", "create", "--config", "/nonexistent.json",
    ],
    "`cloudless agent leave --help`": ["-m", "cloudless", "agent", "leave", "--help"],
    "coordinator: CLI + `cloudless.coordinator.wiring.process`, to argument parsing": [
        "-c",
        "from cloudless.cli.main import app; import cloudless.coordinator.wiring.process; "
        "app(['coordinator', '--no-such-flag'])",
    ],
    "agent: CLI + `cloudless.agent.agent`, to argument parsing": [
        "-c",
        "from cloudless.cli.main import app; import cloudless.agent.agent; "
        "app(['agent', '--no-such-flag'])",
    ],
}  # fmt: skip


def cpu_seconds(tree: str, args: list[str], cache: str | None) -> float:
    env = dict(os.environ, PYTHONPATH=tree, COLUMNS="100")
    if cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=tree, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cached", action="store_true")
    a = ap.parse_args()
    trees = {"before": a.before, "after": a.after}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {k: (f"{tmp}/{k}" if a.cached else None) for k in trees}
        if a.cached:
            for k, tree in trees.items():
                for args in CASES.values():
                    cpu_seconds(tree, args, caches[k])
        runs: dict[tuple[str, str], list[float]] = {(k, c): [] for k in trees for c in CASES}
        loads = [os.getloadavg()[0]]
        for r in range(a.rounds):
            for k in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                for c, args in CASES.items():
                    runs[(k, c)].append(cpu_seconds(trees[k], args, caches[k]))
            loads.append(os.getloadavg()[0])
    mode = "bytecode cached" if a.cached else "environment as given"
    print(f"{mode}; {a.rounds} rounds; 1-min load average {min(loads):.2f}-{max(loads):.2f}")
    print("| process | before: median CPU s (min-max) | after | after/before |")
    print("| --- | --- | --- | --- |")
    for c in CASES:
        b, n = runs[("before", c)], runs[("after", c)]
        mb, mn = statistics.median(b), statistics.median(n)
        print(
            f"| {c} | {mb:.2f} ({min(b):.2f}-{max(b):.2f}) "
            f"| {mn:.2f} ({min(n):.2f}-{max(n):.2f}) | {mn / mb:.2f} |"
        )


if __name__ == "__main__":
    main()
