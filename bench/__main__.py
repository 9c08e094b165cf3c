"""Run every benchmark suite, or the ones named: ``python -m bench [scheduler store …]``.

A suite is a subpackage ``bench/<name>/`` with a ``__main__.py``; it writes
``bench/results/<name>.json``. Suites run one after another in separate processes so that one
suite's memory and threads do not skew the next.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def suites() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if p.is_dir() and (p / "__main__.py").exists())


def main(argv: list[str]) -> int:
    names = argv or suites()
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent)
        if rc != 0:
            failed.append(name)
    if failed:
        print("failed suites:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
