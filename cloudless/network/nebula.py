"""Running Nebula: the CA and device certificates (``nebula-cert``) and a supervised ``nebula``.

``NebulaCA`` creates the cluster's Nebula CA once (kept beside the X.509 CA) and signs device
certificates; ``fingerprint`` is what goes into every device's blocklist when a node is removed.

Contract of ``Overlay`` (passed by ``NebulaSupervisor`` and ``FakeOverlay``):

* ``apply(config, cert_changed)`` writes the config and returns what it did: ``"start"`` (not
  running yet), ``"none"`` (same config), ``"reload"`` (SIGHUP: blocklist, firewall,
  lighthouses) or ``"restart"`` (routes, listen socket, relays, or a re-issued certificate,
  which Nebula 1.6 does not apply to live tunnels on reload); see ``restart_needed``.
* ``run()`` keeps nebula running until cancelled: an unexpected exit is restarted after a
  backoff and counted in ``restarts``; on cancel the process is stopped and reaped.
* ``wait_active(timeout)`` returns once the tun interface is up, else raises NetworkEdgeError
  with the last lines nebula logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.proc import die_with_parent_argv
from cloudless.lib.waits import within
from cloudless.network.addressing import DeviceAddresses
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula_config import (
    NebulaVersion,
    ca_argv,
    restart_needed,
    sign_argv,
    to_yaml,
)
from cloudless.network.nebula_keys import public_key_problem

ACTIVE_MARK = "Nebula interface is active"
RESTART_BACKOFF = Backoff(base=0.5, cap=10.0)


async def _run(argv: Sequence[str], timeout: float = 30.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await within(timeout, proc.communicate())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise NetworkEdgeError(f"`{argv[0]} {argv[1]}` took over {timeout}s") from None
    if proc.returncode != 0:
        msg = (err or out).decode(errors="replace").strip()
        raise NetworkEdgeError(f"`{' '.join(argv[:2])}` failed: {msg}")
    return out.decode(errors="replace")


async def nebula_version(binary: str = "nebula") -> NebulaVersion:
    """The installed nebula's version (``nebula -version``)."""
    try:
        return NebulaVersion.parse(await _run([binary, "-version"]))
    except FileNotFoundError:
        raise NetworkEdgeError(f"{binary} is not installed (apt-get install nebula)") from None


class NebulaCA:
    """The cluster's Nebula CA in ``directory`` (``ca.crt``, ``ca.key``, mode 0600 key)."""

    def __init__(
        self, directory: str | Path, tool: str = "nebula-cert", *, create: bool = True
    ) -> None:
        """``create=False``: never make a CA here (a coordinator that joined a cluster gets
        the cluster's with the join answer; a second CA would split the overlay)."""
        self.dir = Path(directory)
        self.tool = tool
        self.create = create
        self.crt = self.dir / "ca.crt"
        self.key = self.dir / "ca.key"
        self._lock = asyncio.Lock()

    async def ensure(self, name: str = "cloudless") -> None:
        """Create the CA unless it exists (concurrent callers create it once)."""
        async with self._lock:
            if _exists(self.crt) and _exists(self.key):
                return
            if not self.create:
                raise NetworkEdgeError(
                    f"no Nebula CA in {self.dir}: this coordinator joined a cluster whose "
                    "coordinators had none when it joined; copy ca.crt and ca.key from "
                    "another coordinator's <ca-dir>/nebula (never make a second one)"
                )
            _mkdir(self.dir)
            argv = ca_argv(name, str(self.crt), str(self.key))
            await _run([self.tool, *argv[1:]])
            os.chmod(self.key, 0o600)

    async def issue(
        self,
        name: str,
        addresses: DeviceAddresses,
        groups: Sequence[str],
        out_dir: str | Path,
        duration_hours: int = 8760,
    ) -> tuple[Path, Path]:
        """Sign a certificate for a new key made here (overwriting older ones): ``(crt, key)``.
        For the coordinator's own lighthouse and labs; devices make their keys (``sign``)."""
        crt, key = await self._sign(name, addresses, groups, Path(out_dir), duration_hours, "")
        assert key is not None
        return crt, key

    async def sign(
        self,
        name: str,
        addresses: DeviceAddresses,
        groups: Sequence[str],
        out_dir: str | Path,
        public_key: str,
        duration_hours: int = 8760,
    ) -> Path:
        """Sign a certificate for ``public_key`` (PEM: the device made its key, which never
        leaves it); the certificate's path. A malformed key is a NetworkEdgeError naming it."""
        problem = public_key_problem(public_key)
        if problem:
            raise NetworkEdgeError(f"{name}: Nebula public key: {problem}")
        crt, _ = await self._sign(
            name, addresses, groups, Path(out_dir), duration_hours, public_key
        )
        return crt

    async def _sign(
        self,
        name: str,
        addresses: DeviceAddresses,
        groups: Sequence[str],
        out: Path,
        duration_hours: int,
        public_key: str,
    ) -> tuple[Path, Path | None]:
        _mkdir(out)
        crt, key, pub = out / "host.crt", out / "host.key", out / "host.pub"
        for p in (crt, key, pub):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if public_key:
            pub.write_text(public_key)
        argv = sign_argv(
            ca_crt=str(self.crt),
            ca_key=str(self.key),
            name=name,
            addresses=addresses,
            groups=groups,
            out_crt=str(crt),
            out_key="" if public_key else str(key),
            in_pub=str(pub) if public_key else "",
            duration_hours=duration_hours,
        )
        await _run([self.tool, *argv[1:]])
        if public_key:
            return crt, None
        os.chmod(key, 0o600)
        return crt, key

    async def fingerprint(self, crt: str | Path) -> str:
        data = json.loads(await _run([self.tool, "print", "-json", "-path", str(crt)]))
        return str(data["fingerprint"])


def _exists(p: Path) -> bool:
    return p.exists()


def _mkdir(p: Path) -> None:
    p.mkdir(parents=True, exist_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Overlay(Protocol):
    restarts: int

    async def apply(self, config: Mapping[str, Any], cert_changed: bool = False) -> str: ...

    async def run(self) -> None: ...

    async def wait_active(self, timeout: float = 10.0) -> None: ...

    @property
    def pid(self) -> int | None: ...


class NebulaSupervisor:
    """The real Overlay; ``host_argv`` prefixes the command (a namespace, in tests)."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        binary: str = "nebula",
        host_argv: Sequence[str] = (),
        clock: Clock | None = None,
        backoff: Backoff = RESTART_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.dir = Path(workdir)
        self.binary = binary
        self.host_argv = list(host_argv)
        self.clock = clock or SystemClock()
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.config_path = self.dir / "config.yml"
        self.config: dict[str, Any] | None = None
        self.restarts = 0
        self.log: deque[str] = deque(maxlen=50)
        self._proc: asyncio.subprocess.Process | None = None
        self._wake = asyncio.Event()
        self._active = asyncio.Event()
        self._restart_requested = False

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.returncode is None else None

    async def apply(self, config: Mapping[str, Any], cert_changed: bool = False) -> str:
        new = json.loads(json.dumps(dict(config)))  # a plain, detached copy
        old = self.config
        _mkdir(self.dir)
        _write_atomic(self.config_path, to_yaml(new))
        self.config = new
        if old is None or self.pid is None:
            self._wake.set()
            return "start"
        action = restart_needed(old, new, cert_changed)
        if action == "reload":
            assert self._proc is not None
            self._proc.send_signal(signal.SIGHUP)
        elif action == "restart":
            self._restart_requested = True
            self._active.clear()
            assert self._proc is not None
            self._proc.terminate()
        return action

    async def wait_active(self, timeout: float = 10.0) -> None:
        try:
            await within(timeout, self._active.wait())
        except TimeoutError:
            tail = " | ".join(list(self.log)[-5:])
            raise NetworkEdgeError(f"nebula did not come up in {timeout}s: {tail}") from None

    async def run(self) -> None:
        attempt = 0
        try:
            while True:
                while self.config is None:
                    self._wake.clear()
                    await self._wake.wait()
                started = self.clock.monotonic()
                rc = await self._run_once()
                if self._restart_requested:
                    self._restart_requested = False
                    continue
                self.restarts += 1
                attempt = 0 if self.clock.monotonic() - started > 30 else attempt + 1
                self.log.append(f"nebula exited with {rc}; restarting")
                await self.clock.sleep(self.backoff.delay(attempt, self.rng))
        finally:
            await self._stop()

    async def _run_once(self) -> int:
        self._active.clear()
        self._proc = await asyncio.create_subprocess_exec(
            *die_with_parent_argv(),
            *self.host_argv,
            self.binary,
            "-config",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if ACTIVE_MARK in line:
                self._active.set()
        return await self._proc.wait()

    async def _stop(self) -> None:
        p = self._proc
        self._active.clear()
        if p is None or p.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        try:
            await within(5, p.wait())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


class FakeOverlay:
    """An in-memory Overlay: records what a real supervisor would have done."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.restarts = 0
        self.actions: list[str] = []
        self._pid: int | None = None
        self._next_pid = 1000
        self._active = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._pid

    def _start(self) -> None:
        self._next_pid += 1
        self._pid = self._next_pid
        self._active.set()

    async def apply(self, config: Mapping[str, Any], cert_changed: bool = False) -> str:
        new = json.loads(json.dumps(dict(config)))
        old, self.config = self.config, new
        if old is None or self._pid is None:
            action = "start"
            self._start()
        else:
            action = restart_needed(old, new, cert_changed)
            if action == "restart":
                self._start()
        self.actions.append(action)
        return action

    async def wait_active(self, timeout: float = 10.0) -> None:
        if self.config is None:
            raise NetworkEdgeError("nebula did not come up: no config applied")
        await self._active.wait()

    def crash(self) -> None:
        """The process died; the next ``run`` turn restarts it."""
        self.restarts += 1
        self._start()

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._pid = None
            self._active.clear()
