"""Switching on cgroup v1 block I/O accounting: a "no limit" rule per disk, on a fake
``/sys/fs/cgroup`` and ``/sys/block``."""

from __future__ import annotations

from pathlib import Path

from cloudless.runtime.containerd.io_accounting import disks, enable


def sys_block(tmp: Path, devs: dict[str, str]) -> Path:
    root = tmp / "block"
    for name, dev in devs.items():
        (root / name).mkdir(parents=True)
        (root / name / "dev").write_text(dev + "\n")
    return root


DEVS = {"vda": "254:0", "nvme0n1": "259:0", "loop0": "7:0", "zram0": "252:0", "ram0": "1:0"}


def test_disks_leave_loop_ram_and_zram_out(tmp_path: Path) -> None:
    assert disks(sys_block(tmp_path, DEVS)) == ["259:0", "254:0"]  # by name: nvme0n1, vda
    assert disks(tmp_path / "missing") == []


def test_v1_gets_a_no_limit_rule_per_disk(tmp_path: Path) -> None:
    cg = tmp_path / "cgroup"
    (cg / "blkio").mkdir(parents=True)
    rule = cg / "blkio" / "blkio.throttle.read_bps_device"
    rule.write_text("")
    assert enable(cg, sys_block(tmp_path, DEVS)) == ["259:0", "254:0"]
    assert rule.read_text() == "259:0 0\n254:0 0\n"  # 0: no limit


def test_v2_is_left_alone(tmp_path: Path) -> None:
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "io.stat").write_text("")
    assert enable(cg, sys_block(tmp_path, DEVS)) == []
