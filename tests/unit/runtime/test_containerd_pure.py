"""containerd-side pure pieces: metrics decoding, start-failure wording, event filters."""

from __future__ import annotations

import os
from pathlib import Path

from cloudless.api.gen.containerd.cgroups.v1 import metrics_pb2 as v1
from cloudless.api.gen.containerd.cgroups.v2 import metrics_pb2 as v2
from cloudless.api.gen.containerd.services.containers.v1 import containers_pb2 as cpb
from cloudless.runtime.containerd.events import explain_start_failure, subscribe_filters
from cloudless.runtime.containerd.stats import (
    decode_metrics,
    net_counters,
    oom_killed_in_metrics,
)


def test_decode_cgroup_v1_working_set() -> None:
    m = v1.Metrics(
        pids=v1.PidsStat(current=3),
        cpu=v1.CPUStat(usage=v1.CPUUsage(total=5_000_000)),
        memory=v1.MemoryStat(
            total_inactive_file=1_000, usage=v1.MemoryEntry(usage=11_000, limit=1 << 63)
        ),
    )
    s = decode_metrics("c", "io.containerd.cgroups.v1.Metrics", m.SerializeToString(), 1.0)
    # working set = usage 11_000 - inactive file 1_000 = 10_000; 2^63 limit means unlimited (0).
    assert (s.cpu_ns, s.memory_bytes, s.memory_limit_bytes, s.pids) == (5_000_000, 10_000, 0, 3)


def test_decode_cgroup_v2() -> None:
    m = v2.Metrics(
        pids=v2.PidsStat(current=2),
        cpu=v2.CPUStat(usage_usec=7),
        memory=v2.MemoryStat(usage=5_000, inactive_file=500, usage_limit=64 << 20),
    )
    s = decode_metrics("c", "types.x/io.containerd.cgroups.v2.Metrics", m.SerializeToString(), 1)
    # 7 us = 7_000 ns; 5_000 - 500 = 4_500 bytes working set.
    assert (s.cpu_ns, s.memory_bytes, s.memory_limit_bytes, s.pids) == (7_000, 4_500, 64 << 20, 2)


def test_decode_block_io_summed_over_devices() -> None:
    e1 = v1.BlkIOEntry
    m1 = v1.Metrics(
        blkio=v1.BlkIOStat(
            io_service_bytes_recursive=[
                e1(op="Read", major=8, value=100), e1(op="Write", major=8, value=4096),
                e1(op="Read", major=9, value=1), e1(op="Write", major=9, value=4),
                e1(op="Total", major=8, value=4196), e1(op="Sync", major=8, value=9),
            ]
        )
    )  # fmt: skip
    s1 = decode_metrics("c", "io.containerd.cgroups.v1.Metrics", m1.SerializeToString(), 1)
    # Read 100 + 1; Write 4096 + 4; Total and Sync lines are not added again.
    assert (s1.disk_read_bytes, s1.disk_write_bytes) == (101, 4100)
    m2 = v2.Metrics(
        io=v2.IOStat(
            usage=[v2.IOEntry(major=8, rbytes=10, wbytes=20), v2.IOEntry(rbytes=1, wbytes=2)]
        )
    )
    s2 = decode_metrics("c", "io.containerd.cgroups.v2.Metrics", m2.SerializeToString(), 1)
    assert (s2.disk_read_bytes, s2.disk_write_bytes) == (11, 22)
    assert s1.net_rx_bytes == s2.net_rx_bytes == -1  # not in cgroup metrics


def test_net_counters_only_for_a_namespace_of_its_own(tmp_path: Path) -> None:
    """A fake /proc: pid 7 in another network namespace, pid 8 in the host's."""
    (tmp_path / "self" / "ns").mkdir(parents=True)
    (tmp_path / "self" / "ns" / "net").write_text("host")
    for pid in ("7", "8"):
        (tmp_path / pid / "ns").mkdir(parents=True)
        (tmp_path / pid / "net").mkdir()
    (tmp_path / "7" / "ns" / "net").write_text("own")
    os.link(tmp_path / "self" / "ns" / "net", tmp_path / "8" / "ns" / "net")  # same inode
    dev = (
        "Inter-|   Receive                            |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
        "    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n"
        "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n"
        "  eth1: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0\n"
    )
    for pid in ("7", "8"):
        (tmp_path / pid / "net" / "dev").write_text(dev)
    root = str(tmp_path)
    # eth0 + eth1, loopback left out: received 1000 + 1, sent 2000 + 2.
    assert net_counters(7, root) == (1001, 2002)
    assert net_counters(8, root) is None  # the host's namespace: not the container's own
    assert net_counters(9, root) is None  # gone


def test_oom_counters() -> None:
    m1 = v1.Metrics(memory_oom_control=v1.MemoryOomControl(oom_kill=1)).SerializeToString()
    m2 = v2.Metrics(memory_events=v2.MemoryEvents(oom_kill=0)).SerializeToString()
    assert oom_killed_in_metrics("io.containerd.cgroups.v1.Metrics", m1)
    assert not oom_killed_in_metrics("io.containerd.cgroups.v2.Metrics", m2)


def test_command_not_found_is_explained() -> None:
    record = cpb.Container(id="c", image="reg/busybox:1")
    runc = (
        "create task c: containerd said UNKNOWN: failed to create shim task: OCI runtime create "
        'failed: runc create failed: unable to start container process: exec: "nope": '
        "executable file not found in $PATH: unknown"
    )
    msg = explain_start_failure("c", record, runc)
    assert "command 'nope' was not found in the image 'reg/busybox:1'" in msg
    assert "OCI runtime" not in msg


def test_subscribe_filters_and_within_or_across() -> None:
    assert subscribe_filters("ns") == [
        'namespace=="ns",topic=="/tasks/exit"',
        'namespace=="ns",topic=="/tasks/oom"',
    ]


def _record(**labels: str) -> cpb.Container:
    return cpb.Container(id="c", image="docker.io/library/busybox:latest", labels=labels)


def test_status_mapping_table() -> None:
    from google.protobuf import timestamp_pb2  # type: ignore[import-untyped]

    from cloudless.api.gen.containerd.types.task import task_pb2 as tpb
    from cloudless.runtime.containerd.status import LABEL_IMAGE, LABEL_OOM, to_status
    from cloudless.runtime.types import ContainerState

    rec = _record(**{LABEL_IMAGE: "busybox", "team": "a"})
    exited = timestamp_pb2.Timestamp(seconds=100)
    cases = [
        # (task, oom label, oom seen, expected state, exit code, oom verdict)
        (None, False, False, ContainerState.CREATED, None, False),
        (tpb.Process(status=tpb.CREATED), False, False, ContainerState.CREATED, None, False),
        (tpb.Process(status=tpb.RUNNING, pid=7), False, False, ContainerState.RUNNING, None, False),
        (tpb.Process(status=tpb.PAUSED, pid=7), False, False, ContainerState.RUNNING, None, False),
        (tpb.Process(status=tpb.STOPPED, exit_status=3, exited_at=exited), False, False,
         ContainerState.EXITED, 3, False),
        (tpb.Process(status=tpb.STOPPED, exit_status=137, exited_at=exited), True, False,
         ContainerState.EXITED, 137, True),  # verdict persisted as a label
        (tpb.Process(status=tpb.STOPPED, exit_status=137, exited_at=exited), False, True,
         ContainerState.EXITED, 137, True),  # verdict seen in this process
        (tpb.Process(status=tpb.UNKNOWN), False, False, ContainerState.UNKNOWN, None, False),
    ]  # fmt: skip
    for proc, label, seen, state, code, oom in cases:
        r = cpb.Container()
        r.CopyFrom(rec)
        if label:
            r.labels[LABEL_OOM] = "true"
        st = to_status(r, proc, oom_seen=seen, started_at=5.0)
        assert (st.state, st.exit_code, st.oom_killed) == (state, code, oom), (proc, label, seen)
        assert st.image == "busybox" and dict(st.labels) == {"team": "a"}  # private labels hidden
        if state is ContainerState.EXITED:
            assert st.finished_at == 100.0
