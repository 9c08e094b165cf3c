"""The storage service's hourly sweeps (lifecycle rules, abandoned versions) against fakes of
the engine and the bucket registry: each runs on the node that acts for a bucket or a
partition, a refusal skips that one and goes on, and a failure nobody foresaw is logged and
tried again at the next sweep, never ending the node."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.objectstore import lifecycle as lc
from cloudless.objectstore.layout import PARTITIONS, LayoutVersion, NodeRole
from cloudless.objectstore.records import partition
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import Bucket
from cloudless.objectstore.service import NodeTls, StorageConfig, StorageService
from cloudless.store.memory import MemoryStore

RULES = lc.encode((lc.Rule("r", True, expire_days=1),))


def service(tmp_path: Path, me: str, owners: list[tuple[str, ...]]) -> StorageService:
    """A service named ``me`` whose current layout gives partition ``p`` the owners
    ``owners[p % len(owners)]``."""
    clock = FakeClock()
    tls = NodeTls(me, "cluster.test", b"", b"", b"")
    svc = StorageService(
        StorageConfig(tmp_path, "z", 10**9, lifecycle_s=60), tls, MemoryStore(clock), clock
    )
    roles = {n: NodeRole(n, 1) for o in owners for n in o}
    parts = tuple(owners[p % len(owners)] for p in range(PARTITIONS))
    layout = LayoutVersion(1, len(owners[0]), roles, parts)
    svc.cluster = SimpleNamespace(history=SimpleNamespace(current=layout))  # type: ignore[assignment]
    return svc


class FakeEngine:
    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.settled: list[int] = []

    async def settle_putting(
        self, part: int, now: float, *, older_than: float, limit: int
    ) -> tuple[int, int, int]:
        self.settled.append(part)
        if part in self.refuse:
            raise S3Error("ServiceUnavailable", f"partition {part}: no read quorum")
        return (0, 1, 0)


async def test_abandoned_versions_are_settled_where_this_node_acts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = service(tmp_path, "n2", [("n1", "n2", "n3"), ("n2", "n3", "n1")])
    engine = FakeEngine(refuse={1})
    await svc.settle_once(engine)  # type: ignore[arg-type]
    assert engine.settled == list(range(1, PARTITIONS, 2))  # n2 comes first in odd ones
    assert "partition 1: no read quorum" in caplog.text  # skipped, the others went on
    engine.settled.clear()
    svc._silent = {"n1"}  # n1 silent for 3 beats: n2 acts for the even ones too
    await svc.settle_once(engine)  # type: ignore[arg-type]
    assert engine.settled == list(range(PARTITIONS))


class FakeIam:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    async def buckets_with_rules(self) -> list[Bucket]:
        return [Bucket(n, 0.0, "k", lifecycle=RULES) for n in self.names]


class FakeExpirer:
    def __init__(self, fail: dict[str, Exception]) -> None:
        self.fail = fail
        self.swept: list[str] = []
        self.engine = FakeEngine(refuse=set())

    async def sweep(self, bucket: str, rules: Any) -> lc.Swept:
        self.swept.append(bucket)
        if bucket in self.fail:
            raise self.fail[bucket]
        return lc.Swept(deleted=1)


async def test_lifecycle_sweeps_buckets_this_node_acts_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"bucket-{i}" for i in range(12)]
    svc = service(tmp_path, "n1", [("n1", "n2"), ("n2", "n1")])
    mine = [n for n in names if partition(n) % 2 == 0]
    assert mine and len(mine) < len(names)
    ex = FakeExpirer({mine[0]: S3Error("ServiceUnavailable", "no quorum for the listing")})
    caplog.set_level(logging.INFO)
    await svc.lifecycle_once(ex, FakeIam(names))  # type: ignore[arg-type]
    assert ex.swept == mine
    assert f"lifecycle sweep of bucket {mine[0]}: ServiceUnavailable" in caplog.text
    assert f"lifecycle of bucket {mine[1]}: 1 objects deleted" in caplog.text


async def test_an_unforeseen_failure_is_logged_and_the_sweeps_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc = service(tmp_path, "n1", [("n1",)])
    names = ["only-bucket"]
    ex = FakeExpirer({"only-bucket": RuntimeError("a bug")})
    svc._caught_up.set()
    task = asyncio.create_task(svc._lifecycle(ex, FakeIam(names)))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert ex.swept == ["only-bucket"] and "lifecycle sweep failed" in caplog.text
    assert isinstance(svc.clock, FakeClock)
    svc.clock.advance(60)
    for _ in range(20):
        await asyncio.sleep(0)
    assert ex.swept == ["only-bucket"] * 2 and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
