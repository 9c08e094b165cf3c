"""A real Cloudless cluster on loopback running the object store: one ``cloudless
coordinator`` process (embedded etcd) and N ``cloudless agent --runtime fake --storage ...``
processes, each on its own ports and data dir. For integration tests and benchmarks.

``kill(i)`` is ``kill -9`` of agent ``i`` (its data stays on disk); ``start(i)`` brings it
back with the identity it enrolled with. ``call_api(method, path, body)`` calls the coordinator's
user API as the admin (``cloudless s3`` does the same: keys, buckets, status); ``etcd()``
opens the coordinator's etcd to read the layout and registry directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudless.lib.net import free_port

CLI = [sys.executable, "-m", "cloudless.cli.main"]
ENV = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.3)


@dataclass
class AgentProc:
    name: str
    zone: str
    capacity: str
    data: Path
    rpc_port: int
    s3_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = "127.0.0.1"
    netns: str = ""

    @property
    def node_id(self) -> str:
        """The id the coordinator gave the node at enrollment (the name and a suffix)."""
        meta = json.loads((self.data / "identity" / "node.json").read_text())
        return str(meta["node_id"])

    @property
    def s3(self) -> str:
        return f"http://{self.address}:{self.s3_port}"


@dataclass
class StoreCluster:
    base: Path
    zones: list[str]
    replication: int = 3
    grace_s: float = 600.0
    capacity: str = "1Gi"
    repair_rate: str = "64Mi"
    lifecycle_s: float | None = None
    """``--storage-lifecycle-every`` (None: the agent's default, and no flag, so an older
    checkout in ``source`` runs too)."""
    source: Path | None = None
    """Run another checkout's code (its root: the processes' working directory and
    ``PYTHONPATH``), e.g. an older commit beside this one in a benchmark."""
    agents: list[AgentProc] = field(default_factory=list)
    coord: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0
    coord_host: str = "127.0.0.1"
    coord_netns: str = ""

    def _in(self, netns: str) -> list[str]:
        return ["ip", "netns", "exec", netns] if netns else []

    def start(self) -> StoreCluster:
        self.api = free_port()
        self.etcd_port = free_port()
        c = self.base / "c"
        self.coord = subprocess.Popen(
            [*self._in(self.coord_netns), *CLI, "coordinator", "--data-dir", str(c),
             "--name", "c1", "--bootstrap", "--host", self.coord_host,
             "--api-port", str(self.api), "--agent-port", str(free_port()),
             "--enroll-port", str(free_port()), "--etcd-client-port", str(self.etcd_port),
             "--etcd-peer-port", str(free_port()), "--root-key-size", "2048",
             "--bcrypt-cost", "4"],
            stdout=subprocess.DEVNULL, stderr=open(self.base / "coordinator.log", "wb"),
            **self._where(),
        )  # fmt: skip
        self.config = c / "admin" / "config.json"
        wait_for(lambda: self.config.exists() or self.coord.poll() is not None, "admin config")  # type: ignore[union-attr]
        if self.coord.poll() is not None:
            raise RuntimeError("coordinator exited: " + (self.base / "coordinator.log").read_text())
        for i, zone in enumerate(self.zones):
            self.add(zone, start=False)
            self.agents[i].proc = self._spawn(self.agents[i], self._token())
        return self

    def add(self, zone: str, *, start: bool = True) -> AgentProc:
        i = len(self.agents) + 1
        a = AgentProc(
            f"node-{i}", zone, self.capacity, self.base / f"a{i}", free_port(), free_port(),
            self.base / f"a{i}.log",
        )  # fmt: skip
        self.agents.append(a)
        if start:
            a.proc = self._spawn(a, self._token())
        return a

    def _token(self) -> str:
        def made() -> str:
            r = subprocess.run(
                [*CLI, "token", "create", "--config", str(self.config)],
                capture_output=True, text=True, **self._where(),
            )  # fmt: skip
            return r.stdout.strip() if r.returncode == 0 else ""

        token: str = wait_for(made, "a node-enrollment token")
        return token

    def _spawn(self, a: AgentProc, token: str = "") -> subprocess.Popen[bytes]:
        join = f"https://{self.coord_host}:{self.api}"
        enroll = ["--join", join, "--token", token] if token else []
        where = ["--address", a.address] if a.netns else []
        if self.lifecycle_s is not None:
            where += ["--storage-lifecycle-every", str(self.lifecycle_s)]
        return subprocess.Popen(
            [*self._in(a.netns), *CLI, "agent", *enroll, *where, "--data-dir", str(a.data),
             "--name", a.name,
             "--zone", a.zone, "--runtime", "fake", "--cpu", "1", "--memory", "1Gi",
             "--restart-hold", "0", "--storage", a.capacity,
             "--storage-listen", f"{a.address}:{a.rpc_port}",
             "--s3-listen", f"{a.address}:{a.s3_port}",
             "--storage-replication", str(self.replication),
             "--storage-grace", str(self.grace_s), "--storage-repair-rate", self.repair_rate],
            stdout=subprocess.DEVNULL, stderr=open(a.log, "ab"), **self._where(),
        )  # fmt: skip

    def _where(self) -> dict[str, Any]:
        if self.source is None:
            return {"env": ENV}
        return {"env": {**ENV, "PYTHONPATH": str(self.source)}, "cwd": str(self.source)}

    def kill(self, i: int) -> None:
        p = self.agents[i].proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def start_agent(self, i: int) -> None:
        self.agents[i].proc = self._spawn(self.agents[i])

    def freeze(self, i: int) -> None:
        """Stop agent ``i`` (SIGSTOP) without closing anything: its connections stay open
        and its peers' calls hang until their own timeouts, as on a device that sleeps."""
        p = self.agents[i].proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGSTOP)

    def thaw(self, i: int) -> None:
        p = self.agents[i].proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGCONT)

    def call_api(self, method: str, path: str, body: Any = None) -> Any:
        from cloudless.cli.client import Client, ClientConfig

        return Client(ClientConfig.load(self.config), timeout=15).call(method, path, body)

    def events(self, kind: str) -> list[str]:
        """The messages of the cluster's last 1,000 events of ``kind``, oldest first (through
        ``cloudless events -o json``: one JSON object a line)."""
        r = subprocess.run(
            [*CLI, "events", "--config", str(self.config), "--kind", kind, "--tail", "1000",
             "-o", "json"],
            capture_output=True, text=True, **self._where(),
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"cloudless events: {r.stderr.strip()}")
        return [str(json.loads(line)["message"]) for line in r.stdout.splitlines() if line.strip()]

    def create_key(self, name: str) -> Any:
        """A new access key through the API (stored sealed), with its secret."""
        from cloudless.objectstore.s3.iam import AccessKey

        k = self.call_api("POST", "/v1/s3/keys", {"name": name})
        return AccessKey(k["key_id"], k["secret"], k["name"], k["created"])

    def create_bucket(self, name: str, owner: str) -> None:
        self.call_api("POST", "/v1/s3/buckets", {"name": name, "owner": owner})

    def etcd(self) -> Any:
        from cloudless.cli.store_cmd import tls_files
        from cloudless.store.etcd import EtcdStore
        from cloudless.store.tls import ClientTls

        files = tls_files(self.base / "c")
        return EtcdStore([f"{self.coord_host}:{self.etcd_port}"], ClientTls.from_files(*files))

    def with_etcd(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """``await fn(store)`` on a client of the cluster's etcd, closed after; from code
        that is not async (a test, a benchmark)."""

        async def go() -> Any:
            store = self.etcd()
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def close(self) -> None:
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGCONT)  # a frozen one too must see its SIGTERM
                a.proc.send_signal(signal.SIGTERM)
        for a in self.agents:
            if a.proc is not None:
                try:
                    a.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    a.proc.kill()
                    a.proc.wait()
        if self.coord is not None and self.coord.poll() is None:
            self.coord.send_signal(signal.SIGTERM)
            try:
                self.coord.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.coord.kill()
                self.coord.wait()
