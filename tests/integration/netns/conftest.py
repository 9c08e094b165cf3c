"""Fixtures for network-namespace lab tests: a lab per test, unique per test run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from cloudless.devenv.netns import (
    NetnsLab,
    cleanup_stale,
    free_subnet,
    netns_unavailable_reason,
)

_REASON = netns_unavailable_reason()
if _REASON is None and shutil.which("busybox") is None:
    _REASON = "busybox (busybox-static) is needed for ping inside namespaces"

pytestmark = pytest.mark.netns

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


def require_netns() -> None:
    if _REASON is not None:
        pytest.skip(_REASON)


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_netns()
    # Subnets from 10.213.100.0 up, leaving 10.213.0-99 to the demo and manual labs.
    with NetnsLab(RUN + "a", free_subnet(skip=100)) as lab:
        yield lab
