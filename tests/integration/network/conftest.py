"""Multi-device network labs in namespaces (skipped without root, ip netns, nebula or CNI)."""

from __future__ import annotations

import os
import shutil

import pytest

from cloudless.network.cni import CNI_PATH
from cloudless.network.testing import sweep_dead_runs, unavailable_reason


def lab_unavailable_reason() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    for tool in ("nebula", "nebula-cert", "busybox", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/install-system-deps)"
    if not os.path.exists(os.path.join(CNI_PATH, "bridge")):
        return f"CNI plugins missing in {CNI_PATH} (containernetworking-plugins)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing: nebula cannot create its interface"
    return None


@pytest.fixture(autouse=True)
def _require_lab() -> None:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    sweep_dead_runs()
