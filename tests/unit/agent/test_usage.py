"""Per-replica usage: rates from two samples, what is worth a heartbeat entry, and the
sampler over the fake runtime on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from cloudless.agent.usage import UsageOutbox, UsageSampler, usage_between, worth_sending
from cloudless.lib.clock import FakeClock
from cloudless.model.usage import ReplicaUsage
from cloudless.runtime.fake import FakeBehavior, FakeRuntime
from cloudless.runtime.types import ContainerSpec, ContainerStats

MiB = 1 << 20


def sample(t: float, cpu_ns: int = 0, **kw: int) -> ContainerStats:
    base = {"memory_bytes": 10 * MiB, "memory_limit_bytes": 64 * MiB, "pids": 2}
    return ContainerStats("r", cpu_ns, timestamp=t, **{**base, **kw})  # type: ignore[arg-type]


RATES = [
    # (prev, cur, (cpu millis, disk read B/s, disk write B/s, net rx, net tx))
    # 0.5e9 ns of CPU over 2 s = 0.25 CPU = 250 millis; 8 MiB written over 2 s = 4 MiB/s.
    (sample(10, 1_000_000_000), sample(12, 1_500_000_000, disk_write_bytes=8 * MiB),
     (250, 0, 4 * MiB, -1, -1)),
    # Network measured (own namespace): 3000 B received over 3 s = 1000 B/s; 0 sent.
    (sample(0, net_rx_bytes=1000, net_tx_bytes=5), sample(3, net_rx_bytes=4000, net_tx_bytes=5),
     (0, 0, 0, 1000, 0)),
    # A counter that went back (the container restarted): counts from zero, 2e9 ns / 4 s.
    (sample(0, 9_000_000_000), sample(4, 2_000_000_000), (500, 0, 0, -1, -1)),
    # No earlier sample, or not an older one: no rates yet (network stays unmeasured).
    (None, sample(5, 7_000_000_000), (0, 0, 0, -1, -1)),
    (sample(5, 1), sample(5, 9_000_000_000), (0, 0, 0, -1, -1)),
    (None, sample(5, net_rx_bytes=10, net_tx_bytes=10), (0, 0, 0, 0, 0)),
]  # fmt: skip


@pytest.mark.parametrize(("prev", "cur", "want"), RATES)
def test_usage_between(
    prev: ContainerStats | None, cur: ContainerStats, want: tuple[int, ...]
) -> None:
    u = usage_between(prev, cur)
    assert (u.cpu_millis, u.disk_read_bps, u.disk_write_bps, u.net_rx_bps, u.net_tx_bps) == want
    assert (u.memory_bytes, u.memory_limit_bytes, u.pids, u.at) == (
        10 * MiB, 64 * MiB, 2, cur.timestamp,
    )  # fmt: skip


BASE = ReplicaUsage("r", 200, 10 * MiB, 64 * MiB, 0, 0, -1, -1, 2, 1.0)

WORTH = [
    (None, BASE, True),  # never sent
    (BASE, replace(BASE, at=9.0), False),  # only newer
    (BASE, replace(BASE, cpu_millis=204), False),  # 4 millis < 5
    (BASE, replace(BASE, cpu_millis=205), True),
    (BASE, replace(BASE, memory_bytes=11 * MiB - 1), False),  # < 1 MiB more
    (BASE, replace(BASE, memory_bytes=11 * MiB), True),
    (BASE, replace(BASE, memory_limit_bytes=0), True),
    (BASE, replace(BASE, pids=3), True),
    (BASE, replace(BASE, disk_write_bps=4095), False),  # < 4 KiB/s
    (BASE, replace(BASE, disk_write_bps=4096), True),
    (BASE, replace(BASE, net_rx_bps=0, net_tx_bps=0), True),  # became measured
]


@pytest.mark.parametrize(("last", "cur", "want"), WORTH)
def test_worth_sending(last: ReplicaUsage | None, cur: ReplicaUsage, want: bool) -> None:
    assert worth_sending(last, cur) is want


def test_outbox_sends_changes_and_departures_once() -> None:
    box = UsageOutbox()
    a, b = replace(BASE, replica_id="a"), replace(BASE, replica_id="b")
    assert box.take({"a": a, "b": b}) == ([a, b], [])  # a new stream: everything
    assert box.take({"a": a, "b": b}) == ([], [])
    a2 = replace(a, cpu_millis=900)
    assert box.take({"a": a2}) == ([a2], ["b"])  # a moved, b stopped
    assert box.take({"a": a2}) == ([], [])


async def test_sampler_over_the_fake_runtime() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, default=FakeBehavior(cpu_millicores=300, disk_write_bps=2048))
    task = asyncio.create_task(rt.run())
    try:
        await rt.pull_image("img")
        for cid in ("a", "b"):
            await rt.create_container(ContainerSpec(id=cid, image="img", memory_bytes=64 * MiB))
        await rt.start_container("a")
        sampler = UsageSampler(rt, clock, lambda: 2.0)
        run = asyncio.create_task(sampler.run())
        await clock.run_for(2.1, step=0.1)
        u = sampler.latest["a"]
        # The fake's counters grow at 300 millicores and 2048 B/s: the rates come back.
        assert (u.cpu_millis, u.disk_write_bps, u.memory_limit_bytes) == (300, 2048, 64 * MiB)
        assert list(sampler.latest) == ["a"]  # b never started
        await rt.stop_container("a")
        await clock.run_for(2.1, step=0.1)
        assert sampler.latest == {}
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class GatedRuntime:
    """``stats_all`` waits for the test to open its gate."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[list[ContainerStats]] = asyncio.get_running_loop().create_future()

    async def stats_all(self) -> list[ContainerStats]:
        return await self.gate


async def test_sampler_ends_when_cancelled_as_a_sample_arrives() -> None:
    """An agent stopping just as a sample comes back: the cancel ends the loop; it is not
    swallowed with the sampler going on to its next sleep."""
    rt = GatedRuntime()
    sampler = UsageSampler(rt, FakeClock(), lambda: 2.0)  # type: ignore[arg-type]
    run = asyncio.create_task(sampler.run())
    for _ in range(3):
        await asyncio.sleep(0)
    rt.gate.set_result([sample(1.0)])
    run.cancel()
    done, _ = await asyncio.wait([run], timeout=2)
    assert done == {run} and run.cancelled()
