"""Reading a running Nebula's state through its ssh admin interface (``sshd``).

``AdminKeys(directory).ensure(port)`` makes, once, the two ed25519 keys the interface needs
(Nebula's host key, and the one client key it authorizes) in OpenSSH format, mode 0600, and a
``known_hosts`` pinning the host key at ``[127.0.0.1]:port``; ``settings`` is the matching
``AdminSettings`` for ``render_config``. The port is the number of Nebula's UDP listen port
(TCP and UDP ports do not collide, and UDP ports are already unique per Nebula on a host).

Contract of ``Admin`` (passed by ``NebulaAdmin`` and ``FakeAdmin``): ``command(line)`` runs one
admin command and returns what it printed, or raises ``NetworkEdgeError`` saying why it could
not (Nebula not running, ssh missing, a refused key). ``hostmap(admin)`` and
``addrmap(admin)`` parse the two commands the overlay report needs (``overlay_state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloudless.lib.waits import within
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula_config import AdminSettings
from cloudless.network.overlay_state import Tunnel, parse_addrmap, parse_hostmap

USER = "cloudless"
HOSTMAP = "list-hostmap -json"
ADDRMAP = "list-lighthouse-addrmap -json"


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _keypair(path: Path) -> str:
    """The OpenSSH public key of the ed25519 key at ``path``, made if missing."""
    if path.exists():
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
        if not isinstance(key, Ed25519PrivateKey):
            raise NetworkEdgeError(f"{path}: not an ed25519 key; delete it to make a new one")
    else:
        key = Ed25519PrivateKey.generate()
        _write_private(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


class AdminKeys:
    """The admin interface's keys in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "client_ed25519_key"
        self.known_hosts = self.dir / "known_hosts"

    def ensure(self, port: int) -> AdminSettings:
        """Make the keys if missing and pin the host key for ``port`` (blocking: call in a
        thread from async code); the ``AdminSettings`` to render."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        host_pub = _keypair(self.host_key)
        client_pub = _keypair(self.client_key)
        _write_private(self.known_hosts, f"[127.0.0.1]:{port} {host_pub}\n".encode())
        return AdminSettings(f"127.0.0.1:{port}", str(self.host_key), USER, client_pub)


class Admin(Protocol):
    async def command(self, line: str) -> str: ...


class NebulaAdmin:
    """The real Admin: OpenSSH's ``ssh`` to ``127.0.0.1:port`` (run through ``host_argv``: a
    namespace in tests), the host key pinned, only the client key offered."""

    def __init__(
        self,
        keys: AdminKeys,
        port: int,
        *,
        host_argv: Sequence[str] = (),
        ssh: str = "ssh",
        timeout: float = 10.0,
    ) -> None:
        self.keys = keys
        self.port = port
        self.host_argv = list(host_argv)
        self.ssh = ssh
        self.timeout = timeout

    def argv(self, line: str) -> list[str]:
        return [
            *self.host_argv,
            *(self.ssh, "-F", "/dev/null", "-T", "-i", str(self.keys.client_key)),
            *("-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"),
            *("-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null"),
            *("-o", f"UserKnownHostsFile={self.keys.known_hosts}", "-o", "ConnectTimeout=5"),
            *("-p", str(self.port), f"{USER}@127.0.0.1", line),
        ]

    async def command(self, line: str) -> str:
        if shutil.which(self.ssh) is None:
            raise NetworkEdgeError(f"`{self.ssh}` is not installed (Debian package openssh-client)")
        proc = await asyncio.create_subprocess_exec(
            *self.argv(line),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await within(self.timeout, proc.communicate())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise NetworkEdgeError(f"nebula admin `{line}` took over {self.timeout}s") from None
        if proc.returncode != 0:
            why = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise NetworkEdgeError(f"nebula admin on port {self.port}: {why}")
        return out.decode(errors="replace")


class FakeAdmin:
    """An in-memory Admin: ``outputs`` by command line; ``down`` makes every command fail."""

    def __init__(self, outputs: Mapping[str, str] | None = None, down: str = "") -> None:
        self.outputs = dict(outputs or {})
        self.down = down
        self.calls: list[str] = []

    async def command(self, line: str) -> str:
        self.calls.append(line)
        if self.down:
            raise NetworkEdgeError(f"nebula admin: {self.down}")
        if line not in self.outputs:
            raise NetworkEdgeError(f"nebula admin: unknown command {line!r}")
        return self.outputs[line]


async def hostmap(admin: Admin) -> tuple[Tunnel, ...]:
    return parse_hostmap(await admin.command(HOSTMAP))


async def addrmap(admin: Admin) -> dict[str, tuple[str, ...]]:
    return parse_addrmap(await admin.command(ADDRMAP))
