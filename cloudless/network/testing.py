"""Test support: network namespaces owned by one test, found and removed by name prefix.

``Namespaces(prefix)`` creates ``<prefix>-<name>`` namespaces and removes every namespace and
link carrying its prefix on ``close()`` (also after a failure half-way), killing the processes
left inside. Prefixes start with a base (``clnet`` unless a suite picks its own) and carry the
test process's pid, so two test runs never sweep each other; ``sweep_dead_runs(base)`` removes
what killed runs left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import Any

PREFIX = "clnet"


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2, nftables)"
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return f"`ip netns` does not work here: {p.stderr.strip()}"
    return None


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=30, check=False
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _names() -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_in(ns: str) -> None:
    for _ in range(50):
        pids = [int(x) for x in run(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def remove_prefix(prefix: str) -> None:
    """Kill processes in, then delete, every namespace and link named ``<prefix>...``."""
    for ns in _names():
        if ns.startswith(prefix + "-"):
            _kill_in(ns)
            run(["ip", "netns", "del", ns], check=False)
    for line in run(["ip", "-o", "link", "show"], check=False).splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(prefix):
                run(["ip", "link", "del", name], check=False)


def sweep_dead_runs(base: str = PREFIX) -> None:
    pattern = re.compile(rf"^({re.escape(base)}(\d+)[a-z]?)-")
    for ns in _names():
        m = pattern.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            remove_prefix(m.group(1))


class Namespaces:
    """Namespaces named ``<prefix>-<name>``; see the module docstring."""

    def __init__(self, tag: str = "", base: str = PREFIX) -> None:
        self.prefix = f"{base}{os.getpid()}{tag}"
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def create(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", ns])
        self.created.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    @staticmethod
    def path(ns: str) -> str:
        return f"/run/netns/{ns}"

    def sh(self, ns: str, cmd: str, *, check: bool = True) -> str:
        return run(["ip", "netns", "exec", ns, "sh", "-c", cmd], check=check)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        remove_prefix(self.prefix)
