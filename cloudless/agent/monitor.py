"""Live host usage for heartbeats: samples, pressure conditions, capacity and allocatable.

Three layers, so the decisions are testable without a machine:

* ``ResourceMonitor.read()`` is the edge: one cheap, non-blocking snapshot of cumulative
  counters from a psutil-like ``source`` (each probe fails soft to "unknown").
* ``compute_sample(prev, cur)`` is pure: rates (CPU millicores used, network bytes/s) are the
  deltas between two readings divided by the time between them on the injected clock. The
  first sample, with no previous reading, reports 0 for rates and ``window_s == 0``.
* ``assess(sample, thresholds)``, ``capacity_of`` and ``allocatable_of`` are pure: conditions,
  each with the reason that turned it on, and resources as ``cloudless.model.Resources``.

CPU use is never measured by sleeping inside psutil (``cpu_percent(interval=...)`` would
block the loop): ``run()`` samples every ``interval`` on the clock and each sample covers the
time since the previous one.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudless.lib.clock import Clock, SystemClock
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources

GiB = 2**30
MiB = 2**20

DEFAULT_RESERVE = Resources(cpu_millis=100, memory_bytes=256 * MiB, disk_bytes=1 * GiB)
_IGNORED_NIC_PREFIXES = ("lo", "docker", "veth", "virbr", "br-", "cni", "flannel", "ifb", "dummy")


class PsutilLike(Protocol):
    """The slice of psutil the monitor uses (the ``psutil`` module satisfies it)."""

    def cpu_times(self, percpu: bool = False) -> Any: ...
    def cpu_count(self, logical: bool = True) -> int | None: ...
    def virtual_memory(self) -> Any: ...
    def disk_usage(self, path: str) -> Any: ...
    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any: ...
    def net_if_stats(self) -> dict[str, Any]: ...
    def pids(self) -> list[int]: ...
    def sensors_battery(self) -> Any: ...


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative counters and gauges at one instant (``at`` is clock-monotonic seconds).

    ``nic_rx``/``nic_tx`` are per-interface byte counters of counted interfaces;
    ``nics_up`` the counted (non-loopback, non-virtual) interfaces that are up. Disk figures
    are for the data dir's filesystem: ``disk_free`` is what an unprivileged writer can still
    use (``used + free`` may be less than ``total`` because of root-reserved blocks). ``None`` on a
    battery field means the host does not tell.
    """

    at: float
    cpu_cores: int = 0
    cpu_busy_s: float = 0.0
    cpu_total_s: float = 0.0
    memory_total: int = 0
    memory_available: int = 0
    disk_total: int = 0
    disk_used: int = 0
    disk_free: int = 0
    nic_rx: tuple[tuple[str, int], ...] = ()
    nic_tx: tuple[tuple[str, int], ...] = ()
    nics_up: tuple[str, ...] = ()
    link_speed_bps: int = 0
    tasks: int = 0
    task_limit: int = 0
    battery_percent: float | None = None
    on_battery: bool | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostSample:
    """One heartbeat's worth of usage. Rates cover the ``window_s`` seconds before ``at``."""

    at: float
    window_s: float
    cpu_cores: int
    cpu_millis_used: int
    memory_total: int
    memory_used: int
    memory_available: int
    disk_total: int
    disk_used: int
    disk_free: int
    net_rx_bytes_per_s: float
    net_tx_bytes_per_s: float
    nics_up: tuple[str, ...]
    link_speed_bps: int
    tasks: int
    task_limit: int
    battery_percent: float | None
    on_battery: bool | None
    problems: tuple[str, ...] = ()

    def usage(self) -> Resources:
        """Live usage as Resources (bandwidth = rx + tx, in bits per second)."""
        bits = round((self.net_rx_bytes_per_s + self.net_tx_bytes_per_s) * 8)
        return Resources(self.cpu_millis_used, self.memory_used, self.disk_used, bits)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a condition turns on. A percentage of 0 (or bytes of 0) disables that test.

    MemoryPressure: available memory < ``memory_available_pct``% of total, or <
    ``memory_available_bytes``. DiskPressure: free space on the data dir's filesystem <
    ``disk_free_pct``% of its size, or < ``disk_free_bytes``. PIDPressure: tasks (threads)
    > ``pid_used_pct``% of the kernel's limit. NetworkUnavailable: no counted interface up.
    """

    memory_available_pct: float = 5.0
    memory_available_bytes: int = 100 * MiB
    disk_free_pct: float = 10.0
    disk_free_bytes: int = 0
    pid_used_pct: float = 90.0
    ignored_nic_prefixes: tuple[str, ...] = _IGNORED_NIC_PREFIXES


@dataclass(frozen=True, slots=True)
class Assessment:
    conditions: NodeConditions
    reasons: tuple[str, ...] = field(default=())


def _delta_rate(
    prev: tuple[tuple[str, int], ...], cur: tuple[tuple[str, int], ...], dt: float
) -> float:
    """Bytes/s summed over interfaces seen in both readings; a counter that went backwards
    (interface re-created, counter reset) contributes 0 for this window."""
    if dt <= 0:
        return 0.0
    before = dict(prev)
    total = sum(max(0, n - before[name]) for name, n in cur if name in before)
    return total / dt


def compute_sample(prev: Reading | None, cur: Reading) -> HostSample:
    """Pure: the sample for ``cur``, with rates over the time since ``prev``."""
    dt = cur.at - prev.at if prev is not None else 0.0
    cpu_millis = 0
    if prev is not None and dt > 0:
        d_total = cur.cpu_total_s - prev.cpu_total_s
        d_busy = cur.cpu_busy_s - prev.cpu_busy_s
        if d_total > 0:
            busy = min(1.0, max(0.0, d_busy / d_total))
            cpu_millis = round(busy * cur.cpu_cores * 1000)
    rx = _delta_rate(prev.nic_rx, cur.nic_rx, dt) if prev is not None else 0.0
    tx = _delta_rate(prev.nic_tx, cur.nic_tx, dt) if prev is not None else 0.0
    return HostSample(
        at=cur.at,
        window_s=max(0.0, dt),
        cpu_cores=cur.cpu_cores,
        cpu_millis_used=cpu_millis,
        memory_total=cur.memory_total,
        memory_used=max(0, cur.memory_total - cur.memory_available),
        memory_available=cur.memory_available,
        disk_total=cur.disk_total,
        disk_used=cur.disk_used,
        disk_free=cur.disk_free,
        net_rx_bytes_per_s=rx,
        net_tx_bytes_per_s=tx,
        nics_up=cur.nics_up,
        link_speed_bps=cur.link_speed_bps,
        tasks=cur.tasks,
        task_limit=cur.task_limit,
        battery_percent=cur.battery_percent,
        on_battery=cur.on_battery,
        problems=cur.problems,
    )


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 100.0


def assess(sample: HostSample, th: Thresholds = Thresholds()) -> Assessment:
    """Pure: which conditions hold for ``sample``, each with the measured numbers behind it.

    An unknown total (0) never raises pressure: no evidence is not pressure.
    """
    reasons: list[str] = []
    mem = disk = pid = False
    if sample.memory_total > 0:
        pct = _pct(sample.memory_available, sample.memory_total)
        if th.memory_available_pct > 0 and pct < th.memory_available_pct:
            mem = True
            reasons.append(
                f"MemoryPressure: {pct:.1f}% memory available (< {th.memory_available_pct:g}%)"
            )
        elif sample.memory_available < th.memory_available_bytes:
            mem = True
            reasons.append(
                f"MemoryPressure: {sample.memory_available} bytes available "
                f"(< {th.memory_available_bytes})"
            )
    if sample.disk_total > 0:
        pct = _pct(sample.disk_free, sample.disk_total)
        if th.disk_free_pct > 0 and pct < th.disk_free_pct:
            disk = True
            reasons.append(f"DiskPressure: {pct:.1f}% disk free (< {th.disk_free_pct:g}%)")
        elif sample.disk_free < th.disk_free_bytes:
            disk = True
            reasons.append(f"DiskPressure: {sample.disk_free} bytes free (< {th.disk_free_bytes})")
    if sample.task_limit > 0 and th.pid_used_pct > 0:
        pct = _pct(sample.tasks, sample.task_limit)
        if pct > th.pid_used_pct:
            pid = True
            reasons.append(
                f"PIDPressure: {sample.tasks}/{sample.task_limit} tasks "
                f"({pct:.1f}% > {th.pid_used_pct:g}%)"
            )
    net_down = not sample.nics_up
    if net_down:
        reasons.append("NetworkUnavailable: no non-loopback network interface is up")
    on_battery = bool(sample.on_battery)
    if on_battery:
        pct_s = f"{sample.battery_percent:.0f}%" if sample.battery_percent is not None else "?"
        reasons.append(f"OnBattery: running on battery ({pct_s})")
    return Assessment(
        NodeConditions(
            memory_pressure=mem,
            disk_pressure=disk,
            pid_pressure=pid,
            network_unavailable=net_down,
            on_battery=on_battery,
        ),
        tuple(reasons),
    )


def capacity_of(
    sample: HostSample,
    bandwidth_bps: int | None = None,
    *,
    limit: Resources | None = None,
    override: Resources | None = None,
) -> Resources:
    """What the node has: all cores, all memory, the data dir's filesystem size, and the link
    bandwidth (``bandwidth_bps`` when configured, else the fastest counted link's speed).

    Each non-zero dimension of ``limit`` (e.g. the agent's cgroup limits) caps the measured
    value; each non-zero dimension of ``override`` (the operator's declared capacity, or a
    simulated device in a lab) replaces it.
    """
    bw = bandwidth_bps if bandwidth_bps is not None else sample.link_speed_bps
    got = [sample.cpu_cores * 1000, sample.memory_total, sample.disk_total, bw]
    if limit is not None:
        got = [min(g, c) if c > 0 else g for g, c in zip(got, _dims(limit), strict=True)]
    if override is not None:
        got = [o if o > 0 else g for g, o in zip(got, _dims(override), strict=True)]
    return Resources(*got)


def _dims(r: Resources) -> list[int]:
    return [r.cpu_millis, r.memory_bytes, r.disk_bytes, r.bandwidth_bps]


def allocatable_of(capacity: Resources, reserve: Resources = DEFAULT_RESERVE) -> Resources:
    """What workloads may use: capacity minus the system reserve, never below 0."""
    return (capacity - reserve).clamp_min(0)


def _existing_dir(path: str) -> str:
    """``path`` or its nearest existing ancestor (the data dir may not exist yet)."""
    p = os.path.abspath(path)
    while not os.path.isdir(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def _counted(name: str, stats: Any, th: Thresholds) -> bool:
    flags = str(getattr(stats, "flags", ""))
    if "loopback" in flags.split(","):
        return False
    return not name.startswith(th.ignored_nic_prefixes)


SampleHandler = Callable[[HostSample], Awaitable[None] | None]


class ResourceMonitor:
    """Samples the host through ``source`` (default: psutil) on ``clock``.

    ``limit`` caps capacity (pass ``facts.detect_cgroup_limits()`` as Resources), ``override``
    replaces measured dimensions (see ``capacity_of``); ``reserve`` is subtracted for
    allocatable; ``bandwidth_bps`` is the configured link bandwidth.

    ``sample()`` reads and returns the sample since the previous call; ``latest`` is the last
    one. ``run(interval, on_sample)`` samples forever, every ``interval`` seconds of the clock.
    """

    def __init__(
        self,
        data_dir: str,
        *,
        source: PsutilLike | None = None,
        clock: Clock | None = None,
        thresholds: Thresholds = Thresholds(),
        reserve: Resources = DEFAULT_RESERVE,
        bandwidth_bps: int | None = None,
        limit: Resources | None = None,
        override: Resources | None = None,
        read_text: Callable[[str], str | None] = _read_text,
    ) -> None:
        if source is None:
            import psutil

            source = psutil  # type: ignore[assignment]
        assert source is not None
        self.data_dir = data_dir
        self.source: PsutilLike = source
        self.clock: Clock = clock or SystemClock()
        self.thresholds = thresholds
        self.reserve = reserve
        self.bandwidth_bps = bandwidth_bps
        self.limit = limit
        self.override = override
        self._read_text = read_text
        self._prev: Reading | None = None
        self.latest: HostSample | None = None

    def read(self) -> Reading:
        """One snapshot of counters; every probe fails soft into ``Reading.problems``."""
        src, th, problems = self.source, self.thresholds, []
        out: dict[str, Any] = {"at": self.clock.monotonic()}

        def probe(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:  # one broken probe must not hide the others
                problems.append(f"{what}: {type(e).__name__}: {e}")

        def cpu() -> None:
            t = src.cpu_times()
            fields = t._asdict() if hasattr(t, "_asdict") else dict(vars(t))
            # On Linux guest time is already inside user/nice; iowait is idle time.
            total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
            idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
            out["cpu_busy_s"], out["cpu_total_s"] = total - idle, total
            out["cpu_cores"] = int(src.cpu_count(logical=True) or 0)

        def memory() -> None:
            vm = src.virtual_memory()
            out["memory_total"], out["memory_available"] = int(vm.total), int(vm.available)

        def disk() -> None:
            du = src.disk_usage(_existing_dir(self.data_dir))
            out["disk_total"], out["disk_used"], out["disk_free"] = (
                int(du.total),
                int(du.used),
                int(du.free),
            )

        def network() -> None:
            stats = src.net_if_stats()
            counted = {n for n, s in stats.items() if _counted(n, s, th)}
            up = sorted(n for n in counted if stats[n].isup)
            out["nics_up"] = tuple(up)
            speeds = [int(stats[n].speed or 0) for n in up]
            out["link_speed_bps"] = max(speeds, default=0) * 1_000_000  # psutil says Mbit/s
            io = src.net_io_counters(pernic=True)
            names = sorted(n for n in io if n in counted)
            out["nic_rx"] = tuple((n, int(io[n].bytes_recv)) for n in names)
            out["nic_tx"] = tuple((n, int(io[n].bytes_sent)) for n in names)

        def tasks() -> None:
            # /proc/loadavg's 4th field is running/total scheduling entities (threads), which
            # is what pid_max and threads-max limit; fall back to counting processes.
            load = self._read_text("/proc/loadavg")
            parts = load.split() if load else []
            if len(parts) >= 4 and "/" in parts[3]:
                out["tasks"] = int(parts[3].split("/")[1])
            else:
                out["tasks"] = len(src.pids())
            limits = []
            for path in ("/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"):
                text = self._read_text(path)
                if text and text.strip().isdigit():
                    limits.append(int(text.strip()))
            out["task_limit"] = min(limits, default=0)

        def battery() -> None:
            b = src.sensors_battery()
            if b is not None:
                out["battery_percent"] = float(b.percent) if b.percent is not None else None
                plugged = b.power_plugged
                out["on_battery"] = None if plugged is None else not plugged

        for what, fn in (
            ("cpu", cpu),
            ("memory", memory),
            ("disk", disk),
            ("network", network),
            ("tasks", tasks),
            ("battery", battery),
        ):
            probe(what, fn)
        return Reading(problems=tuple(problems), **out)

    def sample(self) -> HostSample:
        """Read now and return usage since the previous read (rates 0 on the first call)."""
        cur = self.read()
        s = compute_sample(self._prev, cur)
        self._prev = cur
        self.latest = s
        return s

    async def sample_over(self, interval: float) -> HostSample:
        """A sample whose rates cover the next ``interval`` seconds (sleeps on the clock)."""
        self.sample()
        await self.clock.sleep(interval)
        return self.sample()

    def assess(self, sample: HostSample) -> Assessment:
        return assess(sample, self.thresholds)

    def conditions(self, sample: HostSample) -> NodeConditions:
        return assess(sample, self.thresholds).conditions

    def capacity(self, sample: HostSample) -> Resources:
        return capacity_of(sample, self.bandwidth_bps, limit=self.limit, override=self.override)

    def allocatable(self, sample: HostSample) -> Resources:
        return allocatable_of(self.capacity(sample), self.reserve)

    async def run(self, interval: float, on_sample: SampleHandler | None = None) -> None:
        """Sample every ``interval`` clock seconds until cancelled; ``on_sample`` (sync or
        async) sees each sample after the first full window."""
        if interval <= 0:
            raise ValueError("monitor interval must be > 0 seconds")
        self.sample()
        while True:
            await self.clock.sleep(interval)
            s = self.sample()
            if on_sample is not None:
                r = on_sample(s)
                if inspect.isawaitable(r):
                    await r


__all__ = [
    "DEFAULT_RESERVE",
    "Assessment",
    "HostSample",
    "PsutilLike",
    "Reading",
    "ResourceMonitor",
    "Thresholds",
    "allocatable_of",
    "assess",
    "capacity_of",
    "compute_sample",
]
