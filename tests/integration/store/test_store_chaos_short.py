"""The chaos scenario, shortened to ~10 s so CI exercises it (full run: tests/chaos/store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.testing.etcd import TestPki
from tests.chaos.store.workload import run_chaos

pytestmark = pytest.mark.integration


async def test_short_chaos(tmp_path: Path, pki: TestPki) -> None:
    h = await run_chaos(tmp_path, pki, seconds=10, writers=8, kill_every=3.0)
    print(
        f"short chaos: {h.acked} acked, {len(h.reads)} reads, {h.kills} kills, "
        f"{h.unknown} unknown, drain {h.drain_seconds:.1f}s"
    )
    assert h.kills >= 2 and h.acked > 50
