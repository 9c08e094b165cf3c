"""Parametrises the runtime contract suite over the fake and real containerd."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.runtime.harness import FakeHarness, Harness, start_loop, stop_loop


@pytest.fixture(params=["fake", "containerd"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "fake":
        h = FakeHarness.make()
        start_loop(h)
        yield h
        await stop_loop(h)
        return
    from tests.contract.runtime import real

    async for rh in real.containerd_harness():
        yield rh
