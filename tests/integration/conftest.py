"""Every integration test's teardown: volume images an agent mounted under the test's
directory are unmounted (an agent leaves them mounted until their volume is deleted, see
``cloudless.agent.volume_quota``), so their loop devices go back to the host."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudless.agent.volume_quota import mounts_under


@pytest.fixture(autouse=True)
def _unmount_volume_images(tmp_path: Path) -> Iterator[None]:
    yield
    for point in mounts_under(tmp_path, "ext4"):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
