"""Persistent volumes: named directories that outlive a replica's containers.

A workload declares them under ``volumes:``; each replica gets its own copy of each volume on
the node that runs it, kept under the agent's data directory, mounted at ``mount_path``. It
survives container restarts and recreations, agent restarts and image updates (a spec change
rolls the replica in place: same id, same node). Example::

    volumes:
      - {name: data, mount_path: /var/lib/db, size: 1Gi}
      - {name: seed, mount_path: /seed, read_only: true}
    on_node_loss: wait      # or recreate

A workload with volumes has stable replica ids (``db-0``, ``db-1``) and each replica is placed
back on the node that holds its volumes. ``on_node_loss`` says what happens when that node is
offline or failed: ``wait`` (default) for it to come back, or ``recreate`` the replica empty on
another node.
"""

from __future__ import annotations

import enum
import posixpath
from dataclasses import dataclass

MAX_VOLUMES = 16
MAX_MOUNT_PATH = 255
MAX_VOLUME_BYTES = 64 << 40  # 64 TiB: a hint, but not an absurd one

#: Mounting over these would break the container (or the kernel interfaces it needs).
SYSTEM_PATHS = frozenset(
    {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
     "/run", "/sbin", "/sys", "/usr"}
)  # fmt: skip
#: Nothing may be mounted anywhere below these (kernel file systems).
KERNEL_TREES = ("/proc", "/sys", "/dev")


class NodeLoss(enum.StrEnum):
    WAIT = "wait"
    RECREATE = "recreate"


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    mount_path: str
    size_bytes: int = 0  # a hint (0: none); usage is reported against it
    read_only: bool = False


def mount_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a volume's mount path inside a container, or None."""
    if not path.startswith("/"):
        return f"{path!r} must be an absolute path inside the container (e.g. /data)"
    if len(path) > MAX_MOUNT_PATH:
        return f"{len(path)} characters, at most {MAX_MOUNT_PATH}"
    if any(c in path for c in "\x00\n\r\t:,"):
        return f"{path!r} contains a character not allowed in a mount path"
    if ".." in path.split("/"):
        return f"{path!r} leaves the container's root ('..' is not allowed)"
    normal = "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading "//"
    if normal != path:
        return f"{path!r} is not a normal path; write {normal!r}"
    if path in SYSTEM_PATHS:
        return f"{path!r} is a system path; mount the volume elsewhere (e.g. /data)"
    for tree in KERNEL_TREES:
        if path.startswith(tree + "/"):
            return f"{path!r} is under {tree}, which belongs to the kernel"
    return None
