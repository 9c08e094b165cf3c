"""Private-file helpers: everything the security core writes is 0600 in a 0700 directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloudless.security.errors import CaStateError


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``; the file is 0600 from its first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def check_private_file(path: Path) -> None:
    """Refuse a key file that others can read (like ssh does), naming the fix."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CaStateError(
            f"{path} is accessible by other users (mode {mode:04o}): run `chmod 600 {path}`"
        )
