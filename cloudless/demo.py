"""The main job (``make demo``): a local cluster running a sample workload.

Not built yet: the coordinator and agent land with the "Coordinator and agent" issue.
"""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "cloudless demo: not available yet — the coordinator and agent are not built "
        "(see the 'Coordinator and agent' issue).",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
