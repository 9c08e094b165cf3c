"""~60 s: 12 writers, the etcd leader SIGKILLed every ~4 s; 0 acknowledged writes lost and no
read goes back in revision. Run with ``make test-chaos``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudless.store.etcd_process import DEFAULT_ETCD
from cloudless.testing.etcd import TestPki

from .workload import run_chaos

pytestmark = pytest.mark.chaos


async def test_leader_kills_lose_no_acknowledged_write(tmp_path: Path) -> None:
    if shutil.which(DEFAULT_ETCD) is None:
        pytest.skip(f"{DEFAULT_ETCD} missing: apt-get install etcd-server")
    h = await run_chaos(tmp_path, TestPki(tmp_path / "pki"), seconds=60, writers=12, kill_every=4.0)
    print(
        f"chaos: {h.acked} acknowledged writes, {len(h.reads)} reads, {h.kills} leader kills, "
        f"{h.unknown} outcome-unknown, {h.unavailable} unavailable, "
        f"{len(h.watched)} creations followed by the watch"
    )
    assert h.kills >= 8 and h.acked > 500
