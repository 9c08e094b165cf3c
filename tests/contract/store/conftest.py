"""Parametrizes the store contract suite over every implementation.

``harness.advance(s)`` makes ``s`` seconds pass: the fake clock moves for ``MemoryStore``,
real time passes for etcd (its leases run on etcd's own clock).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudless.lib.clock import Clock, FakeClock, SystemClock
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_process import DEFAULT_ETCD
from cloudless.store.memory import MemoryStore
from cloudless.store.protocol import Store
from cloudless.testing.etcd import BlockingEtcd, TestPki, member_configs


@dataclass
class Harness:
    store: Store
    advance: Callable[[float], Awaitable[None]]
    name: str
    clock: Clock


async def _memory() -> AsyncIterator[Harness]:
    clock = FakeClock()
    store = MemoryStore(clock)
    expirer = asyncio.ensure_future(store.run(tick=0.25))

    async def advance(seconds: float) -> None:
        await clock.run_for(seconds, step=0.25)

    yield Harness(store, advance, "memory", clock)
    await store.close()
    expirer.cancel()


async def _measured() -> AsyncIterator[Harness]:
    """``MeasuredStore`` (the metrics wrapper) over the memory store: a wrapper must keep
    the contract of what it wraps."""
    from cloudless.observability.store import MeasuredStore

    async for h in _memory():
        yield Harness(MeasuredStore(h.store), h.advance, "measured", h.clock)  # type: ignore[arg-type]


IMPLEMENTATIONS = ["memory", "measured", "etcd"]


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingEtcd, TestPki]]:
    """One real single-member etcd (mTLS, loopback, random ports) shared by the suite."""
    if shutil.which(DEFAULT_ETCD) is None:
        pytest.skip(f"{DEFAULT_ETCD} missing: apt-get install etcd-server")
    base: Path = tmp_path_factory.mktemp("etcd-contract")
    pki = TestPki(base / "pki")
    with BlockingEtcd(member_configs(base, pki, 1)) as etcd:
        yield etcd, pki


async def _etcd(server: tuple[BlockingEtcd, TestPki]) -> AsyncIterator[Harness]:
    etcd, pki = server
    store = EtcdStore(etcd.endpoints, pki.client())
    store.page_size = 2  # every listing in the suite crosses pages

    async def advance(seconds: float) -> None:
        await asyncio.sleep(seconds)

    yield Harness(store, advance, "etcd", SystemClock())
    await store.close()


@pytest.fixture(params=IMPLEMENTATIONS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        async for h in _memory():
            yield h
    elif request.param == "measured":
        async for h in _measured():
            yield h
    else:
        async for h in _etcd(request.getfixturevalue("etcd_server")):
            yield h
