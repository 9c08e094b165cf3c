"""Decoding ``Tasks.Metrics`` payloads: cgroup v1 and v2 metrics into ``ContainerStats``.

Memory is the working set (usage minus inactive file cache), as kubelet and docker report it.
An "unlimited" cgroup limit (a huge number) is reported as 0. Disk bytes are the cgroup's block
I/O (v1 ``blkio.io_service_bytes_recursive`` Read/Write, v2 ``io.stat`` rbytes/wbytes) summed
over devices. Network bytes come from ``/proc/<pid>/net/dev`` only when the task has a
network namespace of its own (``net_counters``).
"""

from __future__ import annotations

from cloudless.api.gen.containerd.cgroups.v1 import metrics_pb2 as v1
from cloudless.api.gen.containerd.cgroups.v2 import metrics_pb2 as v2
from cloudless.runtime.errors import RuntimeFailure
from cloudless.runtime.types import ContainerStats

V1_TYPE = "io.containerd.cgroups.v1.Metrics"
V2_TYPE = "io.containerd.cgroups.v2.Metrics"
_UNLIMITED = 1 << 62


def _limit(value: int) -> int:
    return 0 if value >= _UNLIMITED else value


def decode_metrics(
    container_id: str, type_url: str, data: bytes, timestamp: float
) -> ContainerStats:
    kind = type_url.rsplit("/", 1)[-1]
    if kind == V1_TYPE:
        m1 = v1.Metrics.FromString(data)
        usage = m1.memory.usage.usage
        io = m1.blkio.io_service_bytes_recursive
        return ContainerStats(
            id=container_id,
            cpu_ns=m1.cpu.usage.total,
            memory_bytes=max(0, usage - m1.memory.total_inactive_file),
            memory_limit_bytes=_limit(m1.memory.usage.limit),
            pids=m1.pids.current,
            timestamp=timestamp,
            disk_read_bytes=sum(e.value for e in io if e.op.lower() == "read"),
            disk_write_bytes=sum(e.value for e in io if e.op.lower() == "write"),
        )
    if kind == V2_TYPE:
        m2 = v2.Metrics.FromString(data)
        return ContainerStats(
            id=container_id,
            cpu_ns=m2.cpu.usage_usec * 1000,
            memory_bytes=max(0, m2.memory.usage - m2.memory.inactive_file),
            memory_limit_bytes=_limit(m2.memory.usage_limit),
            pids=m2.pids.current,
            timestamp=timestamp,
            disk_read_bytes=sum(e.rbytes for e in m2.io.usage),
            disk_write_bytes=sum(e.wbytes for e in m2.io.usage),
        )
    raise RuntimeFailure(f"container {container_id}: unknown metrics type {type_url!r}")


def oom_killed_in_metrics(type_url: str, data: bytes) -> bool:
    """Whether the cgroup recorded an OOM kill (v1 ``memory.oom_control``, v2 memory.events)."""
    kind = type_url.rsplit("/", 1)[-1]
    if kind == V1_TYPE:
        return bool(v1.Metrics.FromString(data).memory_oom_control.oom_kill > 0)
    if kind == V2_TYPE:
        return bool(v2.Metrics.FromString(data).memory_events.oom_kill > 0)
    return False


def process_start_time(pid: int, proc_root: str = "/proc") -> float | None:
    """Wall-clock start of ``pid`` from ``/proc`` (field 22 of stat, in clock ticks after boot
    time ``btime``); None if it is gone. Used for ``started_at`` of adopted containers."""
    import os

    try:
        with open(f"{proc_root}/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"{proc_root}/stat") as f:
            btime = next(int(x.split()[1]) for x in f if x.startswith("btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def net_counters(pid: int, proc_root: str = "/proc") -> tuple[int, int] | None:
    """(received, sent) bytes over the non-loopback interfaces of ``pid``'s network namespace,
    or None when that namespace is the host's (``proc_root``/self's) or ``pid`` is gone: a
    container sharing the host network has no counters of its own."""
    import os

    try:
        if (
            os.stat(f"{proc_root}/{pid}/ns/net").st_ino
            == os.stat(f"{proc_root}/self/ns/net").st_ino
        ):
            return None
        with open(f"{proc_root}/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return None
    rx = tx = 0
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return rx, tx
