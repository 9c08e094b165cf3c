"""Parametrizes the store contract suite over every implementation.

``harness.advance(s)`` makes ``s`` seconds pass: the fake clock moves for ``MemoryStore``,
real time passes for etcd (its leases run on etcd's own clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.store.memory import MemoryStore
from cloudless.store.protocol import Store


@dataclass
class Harness:
    store: Store
    advance: Callable[[float], Awaitable[None]]
    name: str


async def _memory() -> AsyncIterator[Harness]:
    clock = FakeClock()
    store = MemoryStore(clock)
    expirer = asyncio.ensure_future(store.run(tick=0.25))

    async def advance(seconds: float) -> None:
        await clock.run_for(seconds, step=0.25)

    yield Harness(store, advance, "memory")
    await store.close()
    expirer.cancel()


IMPLEMENTATIONS = ["memory"]


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        async for h in _memory():
            yield h
    else:
        etcd_store = request.getfixturevalue("etcd_store_factory")
        async for h in etcd_store():
            yield h
