"""Where a replica's persistent volumes live on this node.

``<root>/<workload>/<replica id>/<volume name>``, with ``root`` the agent's
``<data dir>/volumes``. Replica ids of workloads with volumes are stable (``db-0``), so the
directory outlives every container of the replica: restarts, recreations, image updates (the
replica is rolled in place) and agent restarts. Removing a replica's containers leaves its
data where it is; only ``drop`` deletes it, for a workload deleted with ``--volumes``.
Whether a volume is held to its size hint is the ``VolumeStore``'s business
(``cloudless.agent.volume_quota``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cloudless.agent.volume_quota import VolumeStore
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.types import BindMount


def volume_dir(root: Path, workload: str, replica_id: str, name: str) -> Path:
    return root / workload / replica_id / name


async def prepare(
    store: VolumeStore, root: Path, workload: str, replica_id: str, spec: WorkloadSpec
) -> tuple[tuple[BindMount, ...], dict[str, str]]:
    """Make the replica's volumes ready (``store.prepare``: created if missing, a new directory
    owned by the agent's user, mode 0755) and return their bind mounts and each volume's
    quota text (``Enforcement.text``) by name."""
    out: list[BindMount] = []
    quota: dict[str, str] = {}
    for v in spec.volumes:
        d = volume_dir(root, workload, replica_id, v.name)
        quota[v.name] = (await store.prepare(d, v.size_bytes)).text()
        out.append(BindMount(os.fspath(d), v.mount_path, v.read_only))
    return tuple(out), quota


async def drop(store: VolumeStore, root: Path, workload: str, replica_id: str) -> None:
    """Delete all of a replica's volumes, mounts included. Only on an explicit
    ``delete --volumes``."""
    await store.drop(root / workload / replica_id)
    with contextlib.suppress(OSError):
        (root / workload).rmdir()  # the workload's directory, once empty


def usage_bytes(path: Path) -> int:
    """Bytes the files under ``path`` take on disk (blocks, not apparent sizes)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                continue
    return total


def usage(root: Path, workload: str, replica_id: str, spec: WorkloadSpec) -> dict[str, int]:
    """Bytes used by each of the replica's volumes, by name (blocking: run it in a thread)."""
    return {
        v.name: usage_bytes(volume_dir(root, workload, replica_id, v.name)) for v in spec.volumes
    }
