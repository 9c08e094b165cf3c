"""Running one etcd member as a supervised child process.

``MemberConfig`` is pure: it turns a member's identity, addresses, TLS files and tuning into
etcd's command line (``argv()``). ``EtcdMember`` starts/stops/kills the process and waits for
it to answer; ``EtcdMember.run()`` supervises it (restart on death or long unhealthiness,
with backoff) until cancelled, then stops it.

Tuning for a LAN (documented in docs/store.md): heartbeat 100 ms, election timeout 1000 ms,
pre-vote on, snapshot every 1024 entries, 2 GiB backend quota, revision-based
auto-compaction keeping the last 10 000 revisions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import random
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.proc import die_with_parent_argv
from cloudless.store.errors import StoreError

if TYPE_CHECKING:
    from cloudless.store.etcd_admin import MemberStatus
from cloudless.lib.waits import within
from cloudless.store.tls import MemberTls

log = logging.getLogger(__name__)

DEFAULT_ETCD = "/usr/bin/etcd"
_DEFAULT_BACKOFF = Backoff(base=0.2, cap=5.0)
_START_MARK = b"--- cloudless: starting etcd ---"


class EtcdNotInstalled(StoreError):
    code = "etcd_not_installed"

    def __init__(self, binary: str) -> None:
        super().__init__(
            f"etcd not found at {binary}: install it with `apt-get install etcd-server` "
            "(Cloudless runs etcd 3.4+ as each coordinator's metadata store)"
        )


class MemberRemoved(StoreError):
    """etcd says this member was removed from the cluster: its data dir must not be reused."""

    code = "etcd_member_removed"


class EtcdStartFailed(StoreError):
    code = "etcd_start_failed"


# The shortest interval at which a member accepts client pings. etcd's default (5 s) is
# longer than our clients' ping interval (``etcd.KEEPALIVE_TIME_MS``): it would answer their
# pings with ``too_many_pings`` and close the connection, and gRPC would then stretch the
# interval, so a member behind a dropped link would be noticed later and later.
GRPC_KEEPALIVE_MIN_TIME_MS = 1_000


@dataclass(frozen=True)
class MemberConfig:
    name: str
    data_dir: Path
    host: str
    client_port: int
    peer_port: int
    tls: MemberTls
    initial_cluster: tuple[tuple[str, str], ...] = ()  # (name, peer url); () = just me
    cluster_state: Literal["new", "existing"] = "new"
    cluster_token: str = "cloudless"
    heartbeat_ms: int = 100
    election_ms: int = 1000
    snapshot_count: int = 1024
    quota_bytes: int = 2 * 1024**3
    compaction_retention_revisions: int = 10_000
    binary: str = DEFAULT_ETCD
    extra_args: tuple[str, ...] = field(default=())

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.client_port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def argv(self) -> list[str]:
        cluster = self.initial_cluster or ((self.name, self.peer_url),)
        t = self.tls
        return [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            "--initial-cluster=" + ",".join(f"{n}={u}" for n, u in cluster),
            f"--initial-cluster-state={self.cluster_state}",
            f"--initial-cluster-token={self.cluster_token}",
            "--client-cert-auth",
            f"--trusted-ca-file={t.ca_file}",
            f"--cert-file={t.cert_file}",
            f"--key-file={t.key_file}",
            "--peer-client-cert-auth",
            f"--peer-trusted-ca-file={t.ca_file}",
            f"--peer-cert-file={t.cert_file}",
            f"--peer-key-file={t.key_file}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            f"--snapshot-count={self.snapshot_count}",
            f"--grpc-keepalive-min-time={GRPC_KEEPALIVE_MIN_TIME_MS}ms",
            "--pre-vote",
            f"--quota-backend-bytes={self.quota_bytes}",
            "--auto-compaction-mode=revision",
            f"--auto-compaction-retention={self.compaction_retention_revisions}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            *self.extra_args,
        ]


REMOVED_SAYINGS = (
    "permanently removed",
    "member has been removed",
    "failed to find local ID in cluster members",
)
"""What etcd logs when its own member was removed from the cluster. The last is the panic of
a member that applies its own removal (its membership no longer holds it) before it reaches
the orderly "permanently removed" exit."""


def says_removed(log: str) -> bool:
    """Whether an etcd process's log says its member was removed."""
    return any(s in log for s in REMOVED_SAYINGS)


class EtcdMember:
    """One etcd process. ``start()`` returns once the member answers a status call."""

    def __init__(
        self,
        config: MemberConfig,
        *,
        clock: Clock | None = None,
        backoff: Backoff = _DEFAULT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock or SystemClock()
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.stop_grace = 10.0  # SIGTERM lets a leader hand over; then SIGKILL
        self.last_status: MemberStatus | None = None  # from the supervisor's health checks
        self.last_healthy_at: float | None = None
        self._supervised = False
        self._planned_exit = False
        self._restarted = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def healthy(self, within: float = 10.0) -> bool:
        """Running and answered a health check in the last ``within`` seconds."""
        t = self.last_healthy_at
        return self.running and t is not None and self._clock.monotonic() - t <= within

    async def start(self, *, ready_timeout: float = 30.0, wait_ready: bool = True) -> None:
        cfg = self.config
        if shutil.which(cfg.binary) is None:
            raise EtcdNotInstalled(cfg.binary)
        cfg.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logf = cfg.log_file.open("ab")
        logf.write(_START_MARK + b"\n")
        logf.flush()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *die_with_parent_argv(),  # never outlive the coordinator (kill -9)
                *cfg.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
            )
        finally:
            logf.close()
        if wait_ready:
            await self.wait_ready(within=ready_timeout)

    async def wait_ready(self, within: float = 30.0) -> None:
        """Until the member answers Maintenance.Status (it may still be a learner/catching up)."""
        from cloudless.store.etcd_admin import member_status

        deadline = self._clock.monotonic() + within
        last: Exception | None = None
        while self._clock.monotonic() < deadline:
            if self._proc is None or self._proc.returncode is not None:
                self._raise_exited()
            try:
                self.last_status = await member_status(self.config, rpc_timeout=1.0)
                self.last_healthy_at = self._clock.monotonic()
                return
            except StoreError as e:
                last = e
            await self._clock.sleep(0.1)
        raise EtcdStartFailed(
            f"etcd member {self.config.name} did not answer within {within:.0f}s "
            f"({last}); see {self.config.log_file}"
        )

    def _raise_exited(self) -> None:
        tail = self.log_tail()
        if self.removed():
            raise MemberRemoved(
                f"etcd member {self.config.name} was removed from the cluster; its data dir "
                f"{self.config.data_dir} must be wiped and the member re-joined"
            )
        code = self._proc.returncode if self._proc else None
        raise EtcdStartFailed(
            f"etcd member {self.config.name} exited (code {code}); last log lines:\n{tail}"
        )

    def _lifetime_log(self) -> str:
        """What the current (or last) etcd process logged, from its start mark on."""
        try:
            text = self.config.log_file.read_bytes()
        except OSError:
            return ""
        return text.rsplit(_START_MARK, 1)[-1].decode(errors="replace")

    def log_tail(self, lines: int = 8) -> str:
        """The last ``lines`` lines the current (or last) etcd process logged."""
        return "\n".join(self._lifetime_log().strip().splitlines()[-lines:])

    async def restart(self, *, ready_timeout: float = 30.0) -> None:
        """Stop the member (SIGTERM: a leader hands over first) and start it again on the same
        data dir, so it reads its files anew (its trusted-CA file is read only at start);
        returns once it answers and knows a leader. Under ``run()`` the supervisor starts it
        again at once (no backoff, not counted as a failure)."""
        if not self._supervised:
            await self.stop()
            await self.start(ready_timeout=ready_timeout)
        else:
            self._restarted.clear()
            self._planned_exit = True
            await self.stop()
            await within(ready_timeout, self._restarted.wait())
            await self.wait_ready(within=ready_timeout)
        await self.wait_leader(within=ready_timeout)

    async def wait_leader(self, within: float = 30.0) -> None:
        """Until the member answers and reports a raft leader."""
        from cloudless.store.etcd_admin import member_status

        deadline = self._clock.monotonic() + within
        while self._clock.monotonic() < deadline:
            try:
                st = await member_status(self.config, rpc_timeout=1.0)
            except StoreError:
                st = None
            if st is not None and st.leader:
                self.last_status, self.last_healthy_at = st, self._clock.monotonic()
                return
            await self._clock.sleep(0.1)
        raise EtcdStartFailed(
            f"etcd member {self.config.name} has no leader {within:.0f}s after its restart; "
            f"see {self.config.log_file}"
        )

    def kill(self) -> None:
        """SIGKILL, for fault injection. The supervisor (``run``) will restart it."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGKILL)

    async def stop(self, grace: float | None = None) -> None:
        grace = self.stop_grace if grace is None else grace
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await within(grace, proc.wait())
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()

    async def wait_exit(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def run(self, *, health_interval: float = 2.0, unhealthy_after: float = 30.0) -> None:
        """Supervise: keep the member running, restart it (with backoff) when it exits or is
        hung (``hung_verdict``: no answer for ``unhealthy_after`` seconds and no CPU used
        meanwhile, or no answer for ``BUSY_SILENCE_LIMIT_S``); on cancellation stop it
        cleanly.

        Raises ``MemberRemoved`` (and does not restart) when etcd says it was removed.
        """
        attempt = 0
        self._supervised = True
        try:
            if not self.running:
                await self.start(wait_ready=False)
            while True:
                await self._until_dead(health_interval, unhealthy_after)
                if self.removed():
                    self._raise_exited()
                if self._planned_exit:  # restart(): at once
                    self._planned_exit = False
                    await self.start(wait_ready=False)
                    self._restarted.set()
                    continue
                delay = self._backoff.delay(attempt, self._rng)
                attempt = min(attempt + 1, 8)
                log.warning("etcd %s exited; restarting in %.2fs", self.config.name, delay)
                await self._clock.sleep(delay)
                await self.start(wait_ready=False)
                self.restarts += 1
                with contextlib.suppress(StoreError):
                    await self.wait_ready(within=unhealthy_after)
                    attempt = 0
        finally:
            self._supervised = False
            await asyncio.shield(self.stop())

    def removed(self) -> bool:
        """etcd logged, in this process's lifetime, that the member was removed (the line may
        be followed by dozens of shutdown lines, one per peer stream)."""
        return says_removed(self._lifetime_log())

    async def _until_dead(self, interval: float, unhealthy_after: float) -> None:
        """Return once the process has exited (killing it first if it stopped answering)."""
        async with asyncio.TaskGroup() as tg:
            exited = tg.create_task(self.wait_exit())
            watchdog = tg.create_task(self._watchdog(interval, unhealthy_after))
            await asyncio.wait([exited, watchdog], return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                self.kill()
            watchdog.cancel()

    async def _watchdog(self, interval: float, unhealthy_after: float) -> None:
        """Return when the member should be restarted (``hung_verdict``): silent and idle
        for ``unhealthy_after`` (no CPU used in the last ``unhealthy_after``), or silent for
        ``BUSY_SILENCE_LIMIT_S`` however busy."""
        from cloudless.store.etcd_admin import member_status

        last_ok = self._clock.monotonic()
        # (time, CPU seconds) of the process; the oldest kept is the newest at or before
        # ``unhealthy_after`` ago, so ``used`` covers at least that window.
        samples: collections.deque[tuple[float, float | None]] = collections.deque(
            [(last_ok, self.cpu_seconds())]
        )
        warned_at = -1e18
        while True:
            await self._clock.sleep(interval)
            now, cpu = self._clock.monotonic(), self.cpu_seconds()
            samples.append((now, cpu))
            while len(samples) > 2 and samples[1][0] <= now - unhealthy_after:
                samples.popleft()
            try:
                self.last_status = await member_status(self.config, rpc_timeout=interval)
                last_ok = self.last_healthy_at = self._clock.monotonic()
                continue
            except StoreError:
                pass
            now = self._clock.monotonic()
            anchor = samples[0][1]
            used = None if cpu is None or anchor is None else cpu - anchor
            verdict = hung_verdict(now - last_ok, used, unhealthy_after)
            if verdict is Verdict.RESTART:
                log.warning(
                    "etcd %s unresponsive for %.0fs (%s CPU s meanwhile); restarting it",
                    self.config.name,
                    now - last_ok,
                    "?" if used is None else f"{used:.2f}",
                )
                return
            if verdict is Verdict.SLOW and now - warned_at >= unhealthy_after:
                warned_at = now
                log.warning(
                    "etcd %s has not answered for %.0fs but is working (%.1f CPU s "
                    "meanwhile): slow, not hung; not restarting it",
                    self.config.name,
                    now - last_ok,
                    used or 0.0,
                )

    def cpu_seconds(self) -> float | None:
        """CPU time the member's process has used so far (``None``: not running/unknown)."""
        pid = self.pid
        if pid is None:
            return None
        try:
            import psutil

            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except Exception:  # gone meanwhile, or /proc unreadable: unknown
            return None


class Verdict(enum.Enum):
    HEALTHY = "healthy"  # silent for less than the limit
    SLOW = "slow"  # silent past the limit but using CPU: starved or overloaded, not hung
    RESTART = "restart"


# A member that has not answered for this long is restarted even if it keeps using CPU.
BUSY_SILENCE_LIMIT_S = 300.0
# Less CPU than this over the silent window counts as idle (hung, frozen, deadlocked).
IDLE_CPU_S = 0.05


def hung_verdict(silent_s: float, cpu_used_s: float | None, unhealthy_after: float) -> Verdict:
    """Whether a member that has not answered health checks for ``silent_s``, and used
    ``cpu_used_s`` of CPU over the last ``unhealthy_after`` seconds, is hung.

    Restarting a member that is merely slow (starved of CPU on a loaded machine) makes
    things worse: it loses its caches, replays its log and may cost the cluster its raft
    leader. So silence alone restarts it only after ``BUSY_SILENCE_LIMIT_S``; before that it
    must also have used (almost) no CPU over the last ``unhealthy_after`` seconds.
    ``cpu_used_s`` unknown counts as idle (the old rule: silence for ``unhealthy_after``).
    """
    if silent_s <= unhealthy_after:
        return Verdict.HEALTHY
    if cpu_used_s is None or cpu_used_s < IDLE_CPU_S or silent_s >= BUSY_SILENCE_LIMIT_S:
        return Verdict.RESTART
    return Verdict.SLOW


def wipe_data_dir(config: MemberConfig) -> None:
    """Delete a removed member's data dir so it is never reused."""
    shutil.rmtree(config.data_dir, ignore_errors=True)
