"""Fixtures for network-namespace lab tests: a lab per test, unique per test run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from cloudless.devenv.netns import (
    NetnsError,
    NetnsLab,
    cleanup_stale,
    free_subnet,
    netns_unavailable_reason,
)

_REASON = netns_unavailable_reason()
if _REASON is None and shutil.which("busybox") is None:
    _REASON = "busybox (busybox-static) is needed for ping inside namespaces"

pytestmark = pytest.mark.netns

# Kernel answers that mean "this machine cannot do it" (no bridge/veth module, a sandbox
# without CAP_NET_ADMIN), as opposed to a bug in the lab code.
_INCAPABLE = ("Unknown device type", "Operation not permitted", "Permission denied")

# Unique per test run, so two runs on one machine do not sweep each other's labs:
# "t" + pid (<= 7 digits) + one letter per lab = at most 9 characters.
RUN = f"t{os.getpid()}"
_TEST_LAB = re.compile(r"^(t(\d+)[a-z])-")


def _sweep_labs_of_dead_runs() -> None:
    """Remove labs left by test runs that were killed (their pid is gone)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    prefixes = {m.group(1): int(m.group(2)) for m in map(_TEST_LAB.match, out.split()) if m}
    for prefix, pid in prefixes.items():
        if not os.path.exists(f"/proc/{pid}"):
            cleanup_stale(prefix)


@pytest.fixture(scope="session", autouse=True)
def _sweep() -> None:
    if _REASON is None:
        _sweep_labs_of_dead_runs()


def _probe_kernel() -> str | None:
    """Build and remove a one-host lab; a kernel refusal becomes a skip reason."""
    try:
        with NetnsLab(RUN + "q", free_subnet(skip=100)) as lab:
            lab.add_host("probe")
    except NetnsError as e:
        if any(m in str(e) for m in _INCAPABLE):
            return f"this kernel/sandbox cannot build a lab: {e}"
        raise
    return None


_probed: list[str | None] = []


def require_netns() -> None:
    if _REASON is not None:
        pytest.skip(_REASON)
    if not _probed:
        _probed.append(_probe_kernel())
    if _probed[0] is not None:
        pytest.skip(_probed[0])


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_netns()
    # Subnets from 10.213.100.0 up, leaving 10.213.0-99 to the demo and manual labs.
    with NetnsLab(RUN + "a", free_subnet(skip=100)) as lab:
        yield lab
