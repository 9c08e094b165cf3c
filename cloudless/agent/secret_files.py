"""Secret and config values on this node: files on a tmpfs, or environment variables.

``<root>/<replica id>/<name>`` for a secret (mode 0400) and ``<root>/<replica id>/config.<name>``
for a config (0444: any user in the container may read it; configs have a name space of their
own, and names hold no "."), owned by the agent's user (root), with
``root`` a tmpfs the agent mounts at ``<data dir>/secrets`` the first time a replica needs a
secret file (``ensure_tmpfs``), and leaves mounted (files outlive an agent restart): values
never touch a disk. An agent that never runs such a replica mounts nothing. Each file is
bind-mounted read-only at the path the spec names. A file is rewritten in place (same inode)
when the secret's value changes, so a running container sees the new value without a
restart; environment variables only change with a new container.

Values reach the agent in assignments and stay in memory (never in the assignment file). After
an agent restart, before the coordinator has sent them again, a replica recreated meanwhile
reuses the files still on the tmpfs; one that needs a value as an environment variable waits
for the coordinator, with a reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from cloudless.lib.errors import CloudlessError
from cloudless.model.secrets import SecretRef, config_key
from cloudless.model.workload import WorkloadSpec
from cloudless.runtime.types import BindMount

TMPFS_OPTIONS = "mode=0700,size=16m,nosuid,nodev,noexec"


def is_tmpfs(path: Path) -> bool:
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            return any(
                (p := line.split())[1] == target and p[2] == "tmpfs" for line in f if line.strip()
            )
    except OSError:
        return False


def ensure_tmpfs(path: Path) -> None:
    """Make ``path`` a private tmpfs (blocking); raise OSError saying why it cannot be."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if is_tmpfs(path):
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", TMPFS_OPTIONS, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise OSError(f"cannot mount a tmpfs at {path}: {r.stderr.strip() or r.returncode}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


SECRET_MODE = 0o400
CONFIG_MODE = 0o444


def file_refs(spec: WorkloadSpec) -> list[tuple[SecretRef, int, str]]:
    """The spec's secret and config references, each with its file mode and its kind."""
    return [(r, SECRET_MODE, "secret") for r in spec.secrets] + [
        (r, CONFIG_MODE, "config") for r in spec.configs
    ]


def value_key(ref: SecretRef, kind: str) -> str:
    """The key of ``ref``'s value in the assignment's values (``config_key`` for a config)."""
    return config_key(ref.name) if kind == "config" else ref.name


def file_name(ref: SecretRef, kind: str) -> str:
    """The name of ``ref``'s file in the replica's directory."""
    return f"config.{ref.name}" if kind == "config" else ref.name


def write_file(path: Path, value: bytes, mode: int = SECRET_MODE) -> None:
    """Write ``value`` to ``path`` in place (same inode), with ``mode``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, value)
    finally:
        os.close(fd)


def prepare(
    root: Path | None, replica_id: str, spec: WorkloadSpec, values: Mapping[str, bytes]
) -> tuple[tuple[BindMount, ...], dict[str, str]]:
    """Write the replica's secret and config files and return their bind mounts and its
    environment from them (blocking: run it in a thread). Raises CloudlessError naming what is
    missing."""
    mounts: list[BindMount] = []
    env: dict[str, str] = {}
    for ref, mode, kind in file_refs(spec):
        value = values.get(value_key(ref, kind))
        if ref.env:
            if value is None:
                raise CloudlessError(
                    f"{kind} {ref.name!r} has not reached this node yet (waiting for the "
                    "coordinator)"
                )
            try:
                env[ref.env] = value.decode()
            except UnicodeDecodeError:
                raise CloudlessError(
                    f"{kind} {ref.name!r} is not UTF-8 text: mount it as a file (path:) "
                    "instead of env"
                ) from None
            continue
        if root is None:
            raise CloudlessError(
                f"{kind} {ref.name!r} needs a tmpfs for its file, and this agent has no "
                "secrets directory"
            )
        try:
            ensure_tmpfs(root)
        except OSError as e:
            raise CloudlessError(f"{kind} {ref.name!r} needs a tmpfs for its file: {e}") from None
        d = root / replica_id
        d.mkdir(mode=0o700, exist_ok=True)
        f = d / file_name(ref, kind)
        if value is not None:
            write_file(f, value, mode)
        elif not f.exists():
            raise CloudlessError(
                f"{kind} {ref.name!r} has not reached this node yet (waiting for the coordinator)"
            )
        mounts.append(BindMount(os.fspath(f), ref.path, read_only=True))
    return tuple(mounts), env


def remove(root: Path | None, replica_id: str) -> None:
    if root is not None:
        shutil.rmtree(root / replica_id, ignore_errors=True)
