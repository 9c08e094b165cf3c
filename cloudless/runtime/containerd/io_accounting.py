"""Block I/O accounting on cgroup v1: switched on, so containers' disk rates are not all 0.

On cgroup v1 the kernel counts a cgroup's block I/O (``blkio.throttle.io_service_bytes*``,
what containerd's v1 metrics carry) inside blk-throttle, and since Linux commit a3166c51702b
("blk-throttle: delay initialization until configuration") blk-throttle is set up on a disk
only when a throttle rule is first written for it. A host where nothing ever configured one
counts nothing, for any cgroup, on any disk: every container's disk rate reads 0 (cgroup v2's
``io.stat`` is counted regardless).

``enable`` writes the rule ``MAJ:MIN 0`` ("no limit") for each disk into the root cgroup's
``blkio.throttle.read_bps_device``: that sets up blk-throttle on the disk and stores no limit,
so nothing is throttled and from then on the kernel counts every cgroup's I/O on it. Loop,
RAM and zram devices are left alone (a loop device's I/O reaches the disk under it).

What cgroup v1 still cannot count, by design: buffered writes reach the disk from the kernel's
writeback threads, which v1 charges to the root cgroup, not to the container that dirtied the
pages (v2 charges them to the writer); reads served from the page cache do no block I/O. So on
v1 a container's disk rates show direct I/O and reads that miss the cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("cloudless.runtime.containerd")

SKIP_PREFIXES = ("loop", "ram", "zram")
RULE_FILE = "blkio.throttle.read_bps_device"


def v1_blkio(cgroup_root: Path) -> Path | None:
    """The v1 blkio hierarchy's root, or None on a cgroup v2 (unified) host."""
    d = cgroup_root / "blkio"
    return d if (d / RULE_FILE).exists() else None


def disks(sys_block: Path) -> list[str]:
    """``MAJ:MIN`` of each disk under ``sys_block`` (``/sys/block``), loop/ram/zram left out.
    Pure over the directory it is given."""
    out = []
    try:
        entries = sorted(sys_block.iterdir())
    except OSError:
        return []
    for d in entries:
        if d.name.startswith(SKIP_PREFIXES):
            continue
        try:
            dev = (d / "dev").read_text().strip()
        except OSError:
            continue
        if ":" in dev:
            out.append(dev)
    return out


def enable(
    cgroup_root: Path = Path("/sys/fs/cgroup"), sys_block: Path = Path("/sys/block")
) -> list[str]:
    """Switch on v1 block I/O accounting for every disk (see the module docstring); return the
    disks it was switched on for (none on cgroup v2, or where the write is refused). Blocking:
    a few sysfs writes."""
    blkio = v1_blkio(cgroup_root)
    if blkio is None:
        return []
    done = []
    for dev in disks(sys_block):
        try:
            fd = os.open(blkio / RULE_FILE, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, f"{dev} 0\n".encode())
            finally:
                os.close(fd)
        except OSError as e:
            log.info("block I/O accounting not switched on for %s: %s", dev, e.strerror)
            continue
        done.append(dev)
    return done
