"""A private docker-registry (Debian's ``docker-registry``) on 127.0.0.1, storage in a tmp dir.

    async with PrivateRegistry(users={"alice": "s3cret"}) as reg:
        ref = await build_busybox_image(reg, "busybox", "1")

Options: ``users`` turns on htpasswd (basic) auth with bcrypt hashes generated here, or with
``token_auth=True`` the bearer-token scheme backed by an in-process ``TokenServer``;
``tls=(cert_file, key_file)`` serves HTTPS. ``registry_config()`` gives the
``RegistryConfig`` a client needs to reach it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

import bcrypt

from cloudless.devenv import _proc
from cloudless.devenv.token_server import ISSUER, SERVICE, TokenServer
from cloudless.lib.net import free_port as _free_port
from cloudless.runtime.oci.distribution import RegistryConfig, RegistryHost

REGISTRY_BIN = "docker-registry"


def registry_available() -> bool:
    return shutil.which(REGISTRY_BIN) is not None


def free_port() -> int:
    return _free_port("127.0.0.1")


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd entry with a bcrypt hash (what ``htpasswd -B`` writes)."""
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"


class PrivateRegistry:
    def __init__(
        self,
        port: int | None = None,
        *,
        root_dir: Path | str | None = None,
        users: dict[str, str] | None = None,
        tls: tuple[str, str] | None = None,
        ca_file: str | None = None,
        token_auth: bool = False,
        bind: str = "127.0.0.1",
    ) -> None:
        self.bind = bind  # the address it listens on (a lab bridge for network namespaces)
        self.port = port or free_port()
        self._own_root = root_dir is None
        self.root = Path(root_dir or tempfile.mkdtemp(prefix="cloudless-registry-"))
        self.users = dict(users or {})
        self.tls = tls
        self.ca_file = ca_file
        self.token_auth = token_auth
        self.token_server: TokenServer | None = None
        self._proc: asyncio.subprocess.Process | None = None
        if token_auth and not self.users:
            raise ValueError("token_auth needs users (the token service checks their passwords)")

    @property
    def host(self) -> str:
        """``<bind>:<port>``: the host part of image references."""
        return f"{self.bind}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def ref(self, name: str, tag: str) -> str:
        return f"{self.host}/{name}:{tag}"

    def registry_config(self, *, with_credentials: bool = True) -> RegistryConfig:
        user, password = next(iter(self.users.items()), ("", ""))
        host = RegistryHost(
            plain_http=self.tls is None,
            ca_file=self.ca_file,
            username=user if with_credentials else "",
            password=password if with_credentials else "",
        )
        return RegistryConfig({self.host: host})

    def render_config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.root / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.bind}:{self.port}",
            "  secret: cloudless-devenv",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.token_server is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token_server.realm}",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {self.token_server.bundle}",
            ]
        elif self.users:
            htpasswd = self.root / "htpasswd"
            htpasswd.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: cloudless", f"    path: {htpasswd}"]
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        if not registry_available():
            raise RuntimeError("docker-registry is not installed")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.token_auth and self.token_server is None:
            self.token_server = TokenServer(self.users, self.root / "token")
            await self.token_server.start()
        cfg = self.root / "config.yml"
        cfg.write_text(self.render_config())
        log = self.root / "registry.log"
        self._proc = await _proc.start([REGISTRY_BIN, "serve", str(cfg)], log)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and self._proc.returncode is None:
            try:
                _, w = await asyncio.open_connection(self.bind, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            w.close()
            return
        tail = _proc.log_tail(log)
        await self.stop()
        raise RuntimeError(f"docker-registry did not listen on {self.host}:\n{tail}")

    async def stop(self) -> None:
        if self._proc is not None:
            await _proc.stop(self._proc)
            self._proc = None
        if self.token_server is not None:
            await self.token_server.stop()
            self.token_server = None

    async def close(self) -> None:
        await self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> PrivateRegistry:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
