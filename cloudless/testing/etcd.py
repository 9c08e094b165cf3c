"""Test and benchmark support: a throwaway Cloudless CA and loopback etcd clusters."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudless.security.ca import CertificateAuthority
from cloudless.store.errors import StoreError
from cloudless.store.etcd import EtcdStore
from cloudless.store.etcd_admin import MemberStatus, member_status
from cloudless.store.etcd_process import EtcdMember, EtcdNotInstalled, MemberConfig
from cloudless.store.pki import client_tls, member_tls
from cloudless.store.tls import ClientTls, MemberTls


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class TestPki:
    """A throwaway Cloudless CA (RSA-2048 root, for speed) issuing etcd member and client
    certificates into ``directory``, exactly as production does (``cloudless.store.pki``)."""

    __test__ = False  # not a pytest class
    directory: Path

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority.init(
            self.directory / "ca", trust_domain="cloudless.test", root_key_size=2048
        )

    @property
    def ca_pem(self) -> bytes:
        return self.ca.bundle_pem

    def member(self, name: str, ip: str = "127.0.0.1") -> MemberTls:
        return member_tls(self.ca, name, ip, self.directory / "members")

    def client(self, name: str = "client") -> ClientTls:
        return client_tls(self.ca, name)


def member_configs(
    base: Path, pki: TestPki, n: int = 1, *, host: str = "127.0.0.1", **tuning: Any
) -> list[MemberConfig]:
    """``n`` members of one new cluster on loopback, with fresh ports and data dirs."""
    ports = free_ports(2 * n, host)
    names = [f"m{i}" for i in range(n)]
    peers = tuple((name, f"https://{host}:{ports[2 * i + 1]}") for i, name in enumerate(names))
    return [
        MemberConfig(
            name=name,
            data_dir=base / f"{name}.etcd",
            host=host,
            client_port=ports[2 * i],
            peer_port=ports[2 * i + 1],
            tls=pki.member(name, host),
            initial_cluster=peers,
            cluster_state="new",
            cluster_token=f"test-{base.name}",
            **tuning,
        )
        for i, name in enumerate(names)
    ]


class BlockingEtcd:
    """etcd members as plain ``Popen`` children, for session-scoped (loop-less) fixtures."""

    def __init__(self, configs: list[MemberConfig]) -> None:
        self.configs = configs
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> BlockingEtcd:
        for cfg in self.configs:
            if shutil.which(cfg.binary) is None:
                raise EtcdNotInstalled(cfg.binary)
            log = cfg.log_file.open("ab")
            self.procs.append(
                subprocess.Popen(cfg.argv(), stdout=log, stderr=log, start_new_session=True)
            )
            log.close()
        # in a thread: the caller may itself be running an event loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._wait_ready()).result()
        return self

    async def _wait_ready(self, within: float = 30.0) -> None:
        from cloudless.store.etcd_admin import member_status

        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for cfg, proc in zip(self.configs, self.procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"etcd {cfg.name} exited; see {cfg.log_file}")
                try:
                    st = await member_status(cfg, rpc_timeout=1.0)
                    if st.leader:
                        break
                except StoreError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"etcd {cfg.name} not ready; see {cfg.log_file}")
                await asyncio.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    @property
    def endpoints(self) -> list[str]:
        return [c.endpoint for c in self.configs]


class SupervisedCluster:
    """``n`` supervised etcd members on loopback (our launcher), for tests and benchmarks.

    ``async with SupervisedCluster(base, pki, 3) as c``: members run under ``EtcdMember.run``
    (restarted when killed); ``c.client()`` connects to all of them.
    """

    def __init__(self, base: Path, pki: TestPki, n: int = 3, **tuning: Any) -> None:
        self.pki = pki
        self.configs = member_configs(base, pki, n, **tuning)
        self.members = [EtcdMember(c) for c in self.configs]
        for m in self.members:
            m.stop_grace = 2.0  # a leader whose followers are gone waits ~8 s to hand over
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def endpoints(self) -> list[str]:
        return [c.endpoint for c in self.configs]

    async def __aenter__(self) -> SupervisedCluster:
        for m in self.members:
            await m.start(wait_ready=False)
        for m in self.members:
            await m.wait_ready()
        tg = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._tasks = [tg.create_task(m.run()) for m in self.members]
        await self.wait_leader()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await self._stack.aclose()

    def client(self, **kw: Any) -> EtcdStore:
        return EtcdStore(self.endpoints, self.pki.client(), **kw)

    async def statuses(self) -> list[MemberStatus | None]:
        async def one(cfg: MemberConfig) -> MemberStatus | None:
            try:
                return await member_status(cfg, rpc_timeout=1.0)
            except StoreError:
                return None

        return list(await asyncio.gather(*(one(c) for c in self.configs)))

    async def leader_index(self) -> int | None:
        for i, st in enumerate(await self.statuses()):
            if st is not None and st.is_leader:
                return i
        return None

    async def wait_leader(self, within: float = 30.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            i = await self.leader_index()
            if i is not None:
                return i
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no etcd leader within {within}s")

    def kill(self, i: int) -> None:
        self.members[i].kill()
