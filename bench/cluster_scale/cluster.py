"""The edges: coordinator processes, agent worker processes, the event stream, /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudless.cli.client import ApiError, Client, ClientConfig
from cloudless.lib.errors import CloudlessError
from cloudless.lib.net import free_port

from .measure import Event, cpu_seconds, parse_event, rss_bytes

REPO = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    try:
        return cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), TICKS)
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_rss(pid: int) -> int:
    try:
        return rss_bytes(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@dataclass
class CoordinatorProc:
    name: str
    data: Path
    api_port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    enroll_port: int = field(default_factory=free_port)
    etcd_client: int = field(default_factory=free_port)
    etcd_peer: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def start(self, *, bootstrap: bool = False, join: str = "", token: str = "") -> None:
        cmd = [
            sys.executable, "-m", "cloudless", "coordinator",
            "--data-dir", str(self.data), "--name", self.name, "--store", "etcd",
            "--api-port", str(self.api_port), "--agent-port", str(self.agent_port),
            "--enroll-port", str(self.enroll_port),
            "--etcd-client-port", str(self.etcd_client), "--etcd-peer-port", str(self.etcd_peer),
            "--root-key-size", "2048", "--bcrypt-cost", "4", "--log-level", "warning",
        ]  # fmt: skip
        if bootstrap:
            cmd.append("--bootstrap")
        if join:
            cmd += ["--join", join, "--token", token]
        log = open(self.data.parent / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def etcd_pids(self) -> list[int]:
        return children(self.pid) if self.proc and self.proc.poll() is None else []

    def kill9(self) -> None:
        """kill -9 the coordinator and its etcd member (the machine dies)."""
        if self.proc is None:
            return
        for pid in [*self.etcd_pids(), self.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()


def wait_api(client: Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call("GET", "/v1/nodes")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def admin_client(
    coord: CoordinatorProc, timeout: float = 60.0, servers: list[str] | None = None
) -> Client:
    path = coord.data / "admin" / "config.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if coord.proc is not None and coord.proc.poll() is not None:
            raise RuntimeError(f"coordinator {coord.name} exited with {coord.proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no admin config at {path} after {timeout:.0f}s")
        time.sleep(0.2)
    cfg = ClientConfig.load(path)
    if servers:
        cfg.servers = servers
    c = Client(cfg, timeout=10.0)
    wait_api(c, timeout)
    return c


def make_tokens(client: Client, n: int, path: Path, threads: int = 8) -> float:
    """Create ``n`` one-time node tokens, one per line in ``path``; returns seconds taken."""
    t0 = time.monotonic()

    def one(_: int) -> str:
        deadline = time.monotonic() + 60
        while True:  # a coordinator whose leadership lapsed answers 503 for a few seconds
            try:
                return client.create_token()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    with ThreadPoolExecutor(threads) as ex:
        toks = list(ex.map(one, range(n)))
    with path.open("a") as f:
        f.write("\n".join(toks) + "\n")
    return time.monotonic() - t0


class PatientClient(Client):
    """A client that waits out a coordinator that is briefly unable to answer (5xx: its
    leadership lapsed under load; or no answer at all) for up to ``patience`` seconds, so one
    refused call does not end a long run. Retried calls are counted in ``retries``."""

    patience = 60.0

    def __init__(self, base: Client) -> None:
        super().__init__(base.config, timeout=base.timeout)
        self.retries = 0

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        deadline = time.monotonic() + self.patience
        tried = False
        while True:
            try:
                return super().call(method, path, body, **kw)
            except ApiError as e:
                if method == "DELETE" and e.status == 404 and tried:
                    return {}  # an earlier attempt did it
                if e.status < 500 or time.monotonic() > deadline:
                    raise
            except CloudlessError:  # no coordinator answered
                if time.monotonic() > deadline:
                    raise
            tried = True
            self.retries += 1
            time.sleep(1.0)


class EventFollower:
    """Follows ``/v1/events?follow=1`` in a thread; keeps every event with its ``at``. A
    broken stream is re-opened with the last events again (duplicates dropped)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.seen: set[tuple[float, str, str]] = set()
        self.reconnects = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        tail = 0
        while True:
            try:
                for line in self.client.stream(f"/v1/events?follow=1&tail={tail}"):
                    try:
                        ev = parse_event(json.loads(line))
                    except (ValueError, KeyError):
                        continue
                    key = (ev.at, ev.kind, ev.message)
                    with self.lock:
                        if key not in self.seen:
                            self.seen.add(key)
                            self.events.append(ev)
            except Exception:
                pass
            self.reconnects += 1
            tail = 500
            time.sleep(0.5)

    def snapshot(self) -> list[Event]:
        with self.lock:
            return list(self.events)

    def wait(self, pred: Any, timeout: float, poll: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred(self.snapshot())
            if v:
                return v
            time.sleep(poll)
        return None


class Worker:
    """One agent worker process (``swarm.py``) and what it has told us."""

    def __init__(
        self, api: str, tokens: Path, first: int, count: int, data: Path, role: str,
        concurrency: int = 16,
    ) -> None:  # fmt: skip
        self.first, self.count, self.role = first, count, role
        self.nodes: dict[str, int] = {}
        self.enroll_s: list[float] = []  # each enrollment's duration, in arrival order
        self.limit = float(concurrency)  # the worker's adaptive in-flight limit
        self.lags: list[tuple[float, float]] = []  # (monotonic, worst loop lag of 5 s)
        self.errors: list[str] = []
        self.killed: dict[str, float] = {}
        self.lock = threading.Lock()
        cmd = [
            sys.executable, "-m", "bench.cluster_scale.swarm", "--api", api,
            "--tokens", str(tokens), "--first", str(first), "--count", str(count),
            "--data", str(data), "--role", role, "--prefix", f"{role}-",
            "--concurrency", str(concurrency),
        ]  # fmt: skip
        errlog = open(data.parent / f"worker-{role}-{first}.log", "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
            text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "enrolled" in msg:
                    self.nodes[msg["node"]] = msg["enrolled"]
                    self.enroll_s.append(float(msg.get("s", 0.0)))
                    self.limit = float(msg.get("limit", self.limit))
                elif "lag" in msg:
                    self.lags.append((time.monotonic(), float(msg["lag"])))
                elif "error" in msg:
                    self.errors.append(msg["error"])
                elif "killed" in msg:
                    self.killed[msg["killed"]] = msg["t"]

    def kill_agent(self, node_id: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"kill": node_id}) + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def max_lag(self, since: float) -> float:
        """The worst event-loop lag this worker reported since ``since`` (monotonic)."""
        with self.lock:
            return max((lag for t, lag in self.lags if t >= since), default=0.0)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait(10)
