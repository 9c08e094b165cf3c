"""A private containerd: its own root, state, sockets and snapshotter dirs, as a child process.

    async with PrivateContainerd(tmp / "ctrd") as cd:
        rt = ContainerdRuntime(cd.address, namespace="test", data_dir=tmp / "agent")

``stop(cleanup=True)`` (the default on context exit) also kills the shims and containers this
daemon started, unmounts its snapshots and removes its cgroups, so a test leaves nothing behind.
``restart()`` stops and starts only the daemon: running containers survive, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cloudless.devenv import _proc

CONTAINERD_BIN = "containerd"
SHIM_SOCKET_DIR = "/run/containerd/s"  # containerd 1.6 shims: sha256(<address>/<ns>/<id>)
RUNC_STATE_DIR = "/run/containerd/runc"  # runc --root of the runc v2 shim, per namespace


def containerd_available() -> bool:
    """True if the containerd and runc binaries are installed (tests skip otherwise)."""
    return all(shutil.which(b) for b in (CONTAINERD_BIN, "runc", "containerd-shim-runc-v2"))


def socket_dir(root: Path) -> Path:
    """Where the sockets go: ``root`` itself, unless that would overflow the 108-byte limit of
    a unix socket path; then a short directory in /tmp named after ``root``'s hash."""
    if len(str(root)) <= 80:
        return root
    return (
        Path(tempfile.gettempdir()) / f"cl-ctrd-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"
    )


def render_config(root: Path) -> str:
    """containerd 1.6 config (version 2) confined to ``root``; the CRI plugin is disabled."""
    sock = socket_dir(root)
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{sock}/containerd.sock"

[ttrpc]
  address = "{sock}/containerd.sock.ttrpc"

[debug]
  address = "{sock}/debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "{root}/snapshots/overlayfs"

[plugins."io.containerd.snapshotter.v1.native"]
  root_path = "{root}/snapshots/native"
"""


class PrivateContainerd:
    def __init__(
        self, root_dir: Path | str, *, start_timeout: float = 20.0, netns: str | None = None
    ) -> None:
        self.root = Path(root_dir).resolve()
        self.start_timeout = start_timeout
        self.netns = netns  # run inside this network namespace (a lab host), so do its tasks
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """The gRPC socket path (``ctr -a <address>``)."""
        return str(socket_dir(self.root) / "containerd.sock")

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.root / "containerd.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        if not containerd_available():
            raise RuntimeError("containerd, runc or containerd-shim-runc-v2 is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        socket_dir(self.root).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.root))
        sock = Path(self.address)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        # nsenter joins only the network namespace: "ip netns exec" would also remount /sys
        # in a new mount namespace without the cgroup hierarchy, which runc needs.
        prefix = ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []
        self._proc = await _proc.start(
            [*prefix, CONTAINERD_BIN, "--config", str(self.config_path)], self.log_path
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                break
            if await _answers(sock):
                return
            await asyncio.sleep(0.05)
        tail = _proc.log_tail(self.log_path)
        await self.stop(cleanup=False)
        raise RuntimeError(f"containerd did not come up at {sock}:\n{tail}")

    async def stop(self, *, cleanup: bool = True) -> None:
        """Stop the daemon; with ``cleanup`` also its shims, containers, mounts and cgroups."""
        if self._proc is not None:
            await _proc.stop(self._proc)
            self._proc = None
        if cleanup:
            await asyncio.to_thread(self._cleanup)

    async def restart(self) -> None:
        """Stop and start the daemon only; shims and containers keep running."""
        await self.stop(cleanup=False)
        await self.start()

    def _tasks(self) -> list[tuple[str, str, Path]]:
        """(namespace, container id, bundle dir) of every task this daemon's shims run."""
        base = self.root / "state" / "io.containerd.runtime.v2.task"
        out = []
        with contextlib.suppress(OSError):
            for ns in base.iterdir():
                for bundle in ns.iterdir():
                    out.append((ns.name, bundle.name, bundle))
        return out

    def _cleanup(self) -> None:
        """Kill this daemon's shims and containers and remove what they leave behind: the
        shim sockets in /run/containerd/s, runc state, cgroups, rootfs mounts."""
        tasks = self._tasks()
        cgroups = []
        for _, _, bundle in tasks:
            with contextlib.suppress(OSError, ValueError, KeyError):
                cgroups.append(
                    json.loads((bundle / "config.json").read_text())["linux"]["cgroupsPath"]
                )
        for shim in _proc.pids_with_arg(self.address):
            for child in _proc.children_of(shim):
                _proc.kill(child)
            _proc.kill(shim)
        time.sleep(0.1)
        for ns, cid, _ in tasks:
            digest = hashlib.sha256(os.path.join(self.address, ns, cid).encode()).hexdigest()
            with contextlib.suppress(OSError):
                os.unlink(f"{SHIM_SOCKET_DIR}/{digest}")
            shutil.rmtree(f"{RUNC_STATE_DIR}/{ns}/{cid}", ignore_errors=True)
            with contextlib.suppress(OSError):
                os.rmdir(f"{RUNC_STATE_DIR}/{ns}")  # only if no other daemon uses it
        with contextlib.suppress(OSError):
            for ns_dir in (self.root / "state" / "io.containerd.runtime.v2.task").iterdir():
                with contextlib.suppress(OSError):
                    os.rmdir(f"{RUNC_STATE_DIR}/{ns_dir.name}")  # only if empty
        for path in cgroups:
            remove_cgroups(path)
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/mounts").read_text().splitlines():
                target = line.split()[1].replace("\\040", " ")
                if target.startswith(str(self.root) + "/"):
                    mounts.append(target)
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        if socket_dir(self.root) != self.root:
            shutil.rmtree(socket_dir(self.root), ignore_errors=True)

    async def __aenter__(self) -> PrivateContainerd:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(cleanup=True)


async def _answers(sock: Path) -> bool:
    try:
        _, w = await asyncio.open_unix_connection(str(sock))
    except OSError:
        return False
    w.close()
    return True


def remove_cgroups(parent: str) -> None:
    """Remove empty cgroup dirs under ``parent`` (e.g. ``/cloudless/test-ns``) in every
    hierarchy (v1 controllers and the v2 unified tree); busy ones are left alone."""
    base = Path("/sys/fs/cgroup")
    roots = [base] + [p for p in base.iterdir() if p.is_dir()] if base.exists() else []
    for r in roots:
        top = r / parent.strip("/")
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
