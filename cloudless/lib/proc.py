"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import shutil
import sys


def die_with_parent_argv() -> list[str]:
    """An argv prefix that has the kernel SIGKILL the child when its parent dies (Linux).

    A coordinator killed with SIGKILL must not leave its etcd member running: the member
    would hold the coordinator's ports and data dir, and the restarted coordinator could not
    start its own. util-linux's ``setpriv --pdeathsig`` sets PR_SET_PDEATHSIG and execs the
    program in place. (A Python ``preexec_fn`` would do the same but forces a plain fork()
    of a process full of gRPC threads, which can deadlock the child before exec.) Empty
    where ``setpriv`` is missing or the platform is not Linux.
    """
    if not sys.platform.startswith("linux") or shutil.which("setpriv") is None:
        return []
    return ["setpriv", "--pdeathsig", "KILL", "--"]
