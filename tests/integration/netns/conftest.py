"""Fixtures for network-namespace lab tests: a lab per test, unique per test run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from cloudless.devenv.netns import NetnsLab, free_subnet, netns_unavailable_reason

_REASON = netns_unavailable_reason()
if _REASON is None and shutil.which("busybox") is None:
    _REASON = "busybox (busybox-static) is needed for ping inside namespaces"

pytestmark = pytest.mark.netns

# Unique per test run, so two runs on one machine do not sweep each other's labs.
RUN = f"t{os.getpid() % 1_000_000}"


def require_netns() -> None:
    if _REASON is not None:
        pytest.skip(_REASON)


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_netns()
    # Subnets from 10.213.100.0 up, leaving 10.213.0-99 to the demo and manual labs.
    with NetnsLab(RUN + "a", free_subnet(skip=100)) as lab:
        yield lab
