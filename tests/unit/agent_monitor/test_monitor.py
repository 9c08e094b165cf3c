"""ResourceMonitor: pure sample/condition/capacity arithmetic as tables, the monitor driven by
a fake psutil and a FakeClock, and one smoke test against the real psutil."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from dataclasses import replace
from typing import Any

import pytest

from cloudless.agent.monitor import (
    DEFAULT_RESERVE,
    HostSample,
    Reading,
    ResourceMonitor,
    Thresholds,
    allocatable_of,
    assess,
    capacity_of,
    compute_sample,
)
from cloudless.lib.clock import FakeClock
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources

GiB, MiB = 2**30, 2**20


# --- compute_sample: rates from deltas -------------------------------------------------------


def reading(at: float, **kw: Any) -> Reading:
    return Reading(at=at, **{"cpu_cores": 4, **kw})


@pytest.mark.parametrize(
    ("prev", "cur", "cpu_millis", "rx", "tx"),
    [
        # busy 100->130 s of total 400->440 s: 30/40 = 75% of 4 cores = 3000m
        (
            reading(10, cpu_busy_s=100, cpu_total_s=400),
            reading(12, cpu_busy_s=130, cpu_total_s=440),
            3000,
            0.0,
            0.0,
        ),
        # idle window: 0 busy of 8 s -> 0m
        (
            reading(0, cpu_busy_s=5, cpu_total_s=100),
            reading(2, cpu_busy_s=5, cpu_total_s=108),
            0,
            0.0,
            0.0,
        ),
        # eth0 rx 1000 -> 6000 over 2.5 s = 2000 B/s; tx 0 -> 500 = 200 B/s
        (
            reading(0, nic_rx=(("eth0", 1000),), nic_tx=(("eth0", 0),)),
            reading(2.5, nic_rx=(("eth0", 6000),), nic_tx=(("eth0", 500),)),
            0,
            2000.0,
            200.0,
        ),
        # counter reset on wlan0 (9000 -> 100) counts 0; eth0 +4000 over 2 s = 2000 B/s;
        # usb0 appeared in this window (no previous value) counts 0
        (
            reading(0, nic_rx=(("eth0", 0), ("wlan0", 9000))),
            reading(2, nic_rx=(("eth0", 4000), ("usb0", 777), ("wlan0", 100))),
            0,
            2000.0,
            0.0,
        ),
        # busy went *up* more than total (clock skew in /proc): clamped to 100% = 4000m
        (
            reading(0, cpu_busy_s=0, cpu_total_s=0),
            reading(1, cpu_busy_s=10, cpu_total_s=5),
            4000,
            0.0,
            0.0,
        ),
        # no time passed: no rates
        (reading(5, cpu_busy_s=0, cpu_total_s=0), reading(5, cpu_busy_s=1, cpu_total_s=2), 0, 0, 0),
    ],
)
def test_rates_from_deltas(
    prev: Reading, cur: Reading, cpu_millis: int, rx: float, tx: float
) -> None:
    s = compute_sample(prev, cur)
    assert (s.cpu_millis_used, s.net_rx_bytes_per_s, s.net_tx_bytes_per_s) == (cpu_millis, rx, tx)
    assert s.window_s == max(0.0, cur.at - prev.at)


def test_first_sample_has_no_rates_but_all_gauges() -> None:
    cur = reading(
        3,
        cpu_busy_s=50,
        cpu_total_s=60,
        memory_total=8 * GiB,
        memory_available=6 * GiB,
        disk_total=100 * GiB,
        disk_used=30 * GiB,
        disk_free=65 * GiB,
        nic_rx=(("eth0", 10**9),),
    )
    s = compute_sample(None, cur)
    assert (s.window_s, s.cpu_millis_used, s.net_rx_bytes_per_s) == (0.0, 0, 0.0)
    # memory used = total - available = 8 - 6 = 2 GiB; disk figures as the filesystem says
    assert (s.memory_used, s.disk_used, s.disk_free) == (2 * GiB, 30 * GiB, 65 * GiB)


def test_usage_as_resources() -> None:
    s = compute_sample(
        reading(0, cpu_busy_s=0, cpu_total_s=0, nic_rx=(("e", 0),), nic_tx=(("e", 0),)),
        reading(
            1,
            cpu_busy_s=1,
            cpu_total_s=4,
            memory_total=4 * GiB,
            memory_available=3 * GiB,
            disk_used=7,
            nic_rx=(("e", 1000),),
            nic_tx=(("e", 250),),
        ),
    )
    # cpu 1/4 of 4 cores = 1000m; memory 4-3 = 1 GiB; bandwidth (1000+250) B/s * 8 = 10000 bps
    assert s.usage() == Resources(1000, 1 * GiB, 7, 10_000)


# --- assess: conditions with reasons ---------------------------------------------------------


def sample(**kw: Any) -> HostSample:
    base = compute_sample(
        None,
        Reading(
            at=0,
            cpu_cores=4,
            memory_total=8 * GiB,
            memory_available=4 * GiB,
            disk_total=100 * GiB,
            disk_used=50 * GiB,
            disk_free=50 * GiB,
            nics_up=("eth0",),
            tasks=200,
            task_limit=32768,
        ),
    )
    return replace(base, **kw)


NONE = NodeConditions()


@pytest.mark.parametrize(
    ("kw", "expected", "reason"),
    [
        ({}, NONE, None),
        # 256 MiB of 8 GiB = 3.125% < 5%
        (
            {"memory_available": 256 * MiB},
            replace(NONE, memory_pressure=True),
            "3.1% memory available (< 5%)",
        ),
        # 0.5 GiB of 8 GiB = 6.25%: above 5%, and 512 MiB >= 100 MiB -> fine
        ({"memory_available": 512 * MiB}, NONE, None),
        # small device: 90 MiB of 1 GiB = 8.8% (>= 5%) but 90 MiB < 100 MiB absolute floor
        (
            {"memory_total": 1 * GiB, "memory_available": 90 * MiB},
            replace(NONE, memory_pressure=True),
            "94371840 bytes available (< 104857600)",
        ),
        # 9 GiB free of 100 GiB = 9% < 10%
        (
            {"disk_free": 9 * GiB},
            replace(NONE, disk_pressure=True),
            "9.0% disk free (< 10%)",
        ),
        # exactly 10% free is not < 10%
        ({"disk_free": 10 * GiB}, NONE, None),
        # 29500/32768 = 90.03% > 90%
        ({"tasks": 29500}, replace(NONE, pid_pressure=True), "29500/32768 tasks (90.0% > 90%)"),
        # 29491/32768 = 89.998% -> fine
        ({"tasks": 29491}, NONE, None),
        ({"nics_up": ()}, replace(NONE, network_unavailable=True), "no non-loopback"),
        (
            {"on_battery": True, "battery_percent": 42.0},
            replace(NONE, on_battery=True),
            "on battery (42%)",
        ),
        ({"on_battery": None, "battery_percent": 80.0}, NONE, None),  # host does not tell
        # unknown totals (0) are no evidence of pressure
        ({"memory_total": 0, "memory_available": 0, "disk_total": 0, "disk_free": 0}, NONE, None),
    ],
)
def test_conditions_table(kw: dict[str, Any], expected: NodeConditions, reason: str | None) -> None:
    a = assess(sample(**kw))
    assert a.conditions == expected
    if reason is None:
        assert a.reasons == ()
    else:
        assert len(a.reasons) == 1 and reason in a.reasons[0], a.reasons


def test_thresholds_are_configurable_and_zero_disables() -> None:
    s = sample(memory_available=1 * GiB, disk_free=20 * GiB)  # 12.5% memory, 20% disk free
    strict = Thresholds(memory_available_pct=15, disk_free_pct=25)
    assert assess(s, strict).conditions == replace(NONE, memory_pressure=True, disk_pressure=True)
    off = Thresholds(memory_available_pct=0, memory_available_bytes=0, disk_free_pct=0)
    assert assess(sample(memory_available=1, disk_free=1), off).conditions == NONE
    # absolute disk floor: 20 GiB free < 50 GiB floor
    floor = Thresholds(disk_free_bytes=50 * GiB)
    assert assess(s, floor).conditions == replace(NONE, disk_pressure=True)


# --- capacity and allocatable ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("link_bps", "configured", "reserve", "capacity", "allocatable"),
    [
        # 4 cores = 4000m; 8 GiB; 100 GiB disk; 1000 Mbit link. Default reserve 100m/256Mi/1Gi:
        # 4000-100 = 3900m, 8192-256 = 7936 MiB, 100-1 = 99 GiB
        (
            10**9,
            None,
            DEFAULT_RESERVE,
            Resources(4000, 8 * GiB, 100 * GiB, 10**9),
            Resources(3900, 7936 * MiB, 99 * GiB, 10**9),
        ),
        # configured bandwidth wins over the link speed: 50 Mbit/s
        (
            10**9,
            50_000_000,
            Resources(),
            Resources(4000, 8 * GiB, 100 * GiB, 50_000_000),
            Resources(4000, 8 * GiB, 100 * GiB, 50_000_000),
        ),
        # reserve larger than capacity clamps at 0: 4000-5000 -> 0
        (
            0,
            None,
            Resources(5000, 1 * GiB, 0, 0),
            Resources(4000, 8 * GiB, 100 * GiB, 0),
            Resources(0, 7 * GiB, 100 * GiB, 0),
        ),
    ],
)
def test_capacity_and_allocatable(
    link_bps: int,
    configured: int | None,
    reserve: Resources,
    capacity: Resources,
    allocatable: Resources,
) -> None:
    s = sample(link_speed_bps=link_bps)
    assert capacity_of(s, configured) == capacity
    assert allocatable_of(capacity_of(s, configured), reserve) == allocatable


@pytest.mark.parametrize(
    ("limit", "override", "capacity"),
    [
        # measured: 4000m, 8 GiB, 100 GiB, 1 Gbit
        (None, None, Resources(4000, 8 * GiB, 100 * GiB, 10**9)),
        # cgroup caps 1500m and 2 GiB; 0 = no cap on disk/bandwidth
        (Resources(1500, 2 * GiB), None, Resources(1500, 2 * GiB, 100 * GiB, 10**9)),
        # a cap above the measured value changes nothing: min(4000, 8000) = 4000
        (Resources(8000), None, Resources(4000, 8 * GiB, 100 * GiB, 10**9)),
        # a lab "Raspberry Pi": declared 4 cores, 1 GiB, 32 GiB disk; bandwidth measured
        (
            None,
            Resources(4000, 1 * GiB, 32 * GiB),
            Resources(4000, 1 * GiB, 32 * GiB, 10**9),
        ),
        # override beats the cap: the operator said so
        (Resources(1000), Resources(2000), Resources(2000, 8 * GiB, 100 * GiB, 10**9)),
    ],
)
def test_capacity_limit_and_override(
    limit: Resources | None, override: Resources | None, capacity: Resources
) -> None:
    s = sample(link_speed_bps=10**9)
    assert capacity_of(s, limit=limit, override=override) == capacity


# --- the monitor with a fake psutil and a fake clock -----------------------------------------

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")
VMem = namedtuple("VMem", "total available")
Disk = namedtuple("Disk", "total used free")
NicIO = namedtuple("NicIO", "bytes_sent bytes_recv")
NicStats = namedtuple("NicStats", "isup speed flags")
Battery = namedtuple("Battery", "percent secsleft power_plugged")


class FakePsutil:
    """A host whose counters the test sets; satisfies PsutilLike."""

    def __init__(self) -> None:
        self.times = CpuTimes(100.0, 0.0, 50.0, 800.0, 50.0, 0.0, 0.0, 0.0, 20.0, 0.0)
        self.cores = 2
        self.vmem = VMem(4 * GiB, 3 * GiB)
        self.disk = Disk(100 * GiB, 40 * GiB, 55 * GiB)
        self.disk_paths: list[str] = []
        self.io = {"lo": NicIO(10**6, 10**6), "eth0": NicIO(0, 0), "docker0": NicIO(5, 5)}
        self.stats = {
            "lo": NicStats(True, 0, "up,loopback,running"),
            "eth0": NicStats(True, 1000, "up,broadcast,running"),
            "docker0": NicStats(True, 10000, "up,broadcast"),
        }
        self.battery: Battery | None = None
        self.broken: set[str] = set()

    def _check(self, what: str) -> None:
        if what in self.broken:
            raise PermissionError(f"{what} denied")

    def cpu_times(self, percpu: bool = False) -> Any:
        self._check("cpu")
        return self.times

    def cpu_count(self, logical: bool = True) -> int | None:
        return self.cores

    def virtual_memory(self) -> Any:
        self._check("memory")
        return self.vmem

    def disk_usage(self, path: str) -> Any:
        self.disk_paths.append(path)
        return self.disk

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any:
        return self.io

    def net_if_stats(self) -> dict[str, Any]:
        return self.stats

    def pids(self) -> list[int]:
        return [1, 2, 3]

    def sensors_battery(self) -> Any:
        return self.battery


PROC = {
    "/proc/loadavg": "0.50 0.40 0.30 2/345 9999\n",
    "/proc/sys/kernel/pid_max": "4194304\n",
    "/proc/sys/kernel/threads-max": "60000\n",
}


def make_monitor(ps: FakePsutil, clock: FakeClock, tmp: str) -> ResourceMonitor:
    return ResourceMonitor(tmp + "/not/yet/created", source=ps, clock=clock, read_text=PROC.get)


def test_monitor_reads_a_host_through_the_source(tmp_path: Any) -> None:
    ps, clock = FakePsutil(), FakeClock()
    mon = make_monitor(ps, clock, str(tmp_path))
    first = mon.sample()
    assert ps.disk_paths == [str(tmp_path)]  # nearest existing ancestor of the data dir
    # cpu: total excludes guest (already in user): 100+50+800+50 = 1000 s, busy = 1000-800-50
    assert (first.cpu_cores, first.cpu_millis_used, first.window_s) == (2, 0, 0.0)
    # tasks from /proc/loadavg (345), limit min(pid_max, threads-max) = 60000
    assert (first.tasks, first.task_limit) == (345, 60000)
    # lo (loopback flag) and docker0 (ignored prefix) are not counted
    assert first.nics_up == ("eth0",) and first.link_speed_bps == 1000 * 10**6

    clock.advance(5)
    t = ps.times
    # +6 s user, +2 s system, +1 s idle, +1 s iowait: busy 8 of 10 s = 80% of 2 cores = 1600m
    ps.times = t._replace(
        user=t.user + 6, system=t.system + 2, idle=t.idle + 1, iowait=t.iowait + 1
    )
    ps.io = {**ps.io, "eth0": NicIO(bytes_sent=5000, bytes_recv=25000), "lo": NicIO(9**9, 9**9)}
    ps.battery = Battery(percent=37.5, secsleft=100, power_plugged=False)
    s = mon.sample()
    assert s.window_s == 5
    assert s.cpu_millis_used == 1600
    # eth0 only: rx 25000/5 = 5000 B/s, tx 5000/5 = 1000 B/s (lo's jump is not counted)
    assert (s.net_rx_bytes_per_s, s.net_tx_bytes_per_s) == (5000.0, 1000.0)
    assert (s.on_battery, s.battery_percent) == (True, 37.5)
    assert mon.conditions(s) == NodeConditions(on_battery=True)
    assert mon.capacity(s) == Resources(2000, 4 * GiB, 100 * GiB, 10**9)
    assert mon.allocatable(s) == Resources(1900, 4 * GiB - 256 * MiB, 99 * GiB, 10**9)
    assert mon.latest is s


def test_a_broken_probe_is_reported_and_the_rest_still_measured(tmp_path: Any) -> None:
    ps = FakePsutil()
    ps.broken = {"memory"}
    s = make_monitor(ps, FakeClock(), str(tmp_path)).sample()
    assert s.problems == ("memory: PermissionError: memory denied",)
    assert (s.memory_total, s.disk_total) == (0, 100 * GiB)
    assert assess(s).conditions == NONE  # unknown memory is not pressure


async def test_run_samples_every_interval_on_the_clock(tmp_path: Any) -> None:
    ps, clock = FakePsutil(), FakeClock()
    mon = make_monitor(ps, clock, str(tmp_path))
    seen: list[HostSample] = []

    async def on_sample(s: HostSample) -> None:
        seen.append(s)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(mon.run(10, on_sample))
        await asyncio.sleep(0)  # the monitor primes at t=0
        await clock.run_for(35, step=1)  # ticks at 10, 20, 30
        task.cancel()
    assert [s.at for s in seen] == [10.0, 20.0, 30.0]
    assert all(s.window_s == 10 for s in seen)


async def test_sample_over_covers_the_interval(tmp_path: Any) -> None:
    ps, clock = FakePsutil(), FakeClock()
    mon = make_monitor(ps, clock, str(tmp_path))

    async def later() -> HostSample:
        return await mon.sample_over(2)

    task = asyncio.create_task(later())
    await asyncio.sleep(0)
    ps.io = {**ps.io, "eth0": NicIO(0, 4000)}
    clock.advance(2)
    s = await task
    assert (s.window_s, s.net_rx_bytes_per_s) == (2, 2000.0)  # 4000 B / 2 s


def test_real_psutil_smoke(tmp_path: Any) -> None:
    mon = ResourceMonitor(str(tmp_path))
    mon.sample()
    sum(i * i for i in range(200_000))  # some CPU work in the window
    s = mon.sample()
    assert s.problems == ()
    assert s.cpu_cores >= 1 and 0 <= s.cpu_millis_used <= s.cpu_cores * 1000
    assert 0 < s.memory_available <= s.memory_total
    assert 0 < s.disk_free <= s.disk_total
    assert s.tasks > 0 and s.task_limit > 0
    cap = mon.capacity(s)
    assert cap.cpu_millis == s.cpu_cores * 1000 and mon.allocatable(s).fits(cap)
