"""Live per-replica usage for heartbeats: CPU, memory and its limit, disk and network rates.

``UsageSampler.run()`` asks the runtime for every running container's counters once per
interval (``stats_all``: two containerd calls whatever the number of replicas) and turns two
consecutive samples into rates (``usage_between``, pure). The link then sends, in each
heartbeat, only the replicas whose usage moved past ``worth_sending``'s thresholds since the
last value sent on that stream (``UsageOutbox``), and the ids of the replicas that stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.model.usage import ReplicaUsage
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.runtime.types import ContainerStats

log = logging.getLogger("cloudless.agent.usage")

#: Smallest changes worth a heartbeat entry (below them a replica's row is left as it was).
CPU_STEP_MILLIS = 5
MEMORY_STEP_BYTES = 1 << 20
RATE_STEP_BPS = 4096


def _rate(prev: int, cur: int, dt: float) -> int:
    """A counter's rate; a counter that went backwards (a restart) counts from zero."""
    if cur < 0 or prev < 0:
        return -1
    return int(max(0, cur - prev if cur >= prev else cur) / dt)


def usage_between(prev: ContainerStats | None, cur: ContainerStats) -> ReplicaUsage:
    """Rates from two samples of one container (``prev`` None or not older: rates 0, the
    network's -1 kept). Pure.

    Example: cpu_ns 1.0e9 -> 1.5e9 over 2 s is 0.25 CPU, 250 millis."""
    dt = cur.timestamp - prev.timestamp if prev is not None else 0.0
    net_known = cur.net_rx_bytes >= 0
    if prev is None or dt <= 0:
        zero = 0 if net_known else -1
        return ReplicaUsage(
            cur.id, 0, cur.memory_bytes, cur.memory_limit_bytes, 0, 0, zero, zero, cur.pids,
            cur.timestamp,
        )  # fmt: skip
    return ReplicaUsage(
        replica_id=cur.id,
        cpu_millis=_rate(prev.cpu_ns, cur.cpu_ns, dt * 1_000_000),
        memory_bytes=cur.memory_bytes,
        memory_limit_bytes=cur.memory_limit_bytes,
        disk_read_bps=_rate(prev.disk_read_bytes, cur.disk_read_bytes, dt),
        disk_write_bps=_rate(prev.disk_write_bytes, cur.disk_write_bytes, dt),
        net_rx_bps=_rate(prev.net_rx_bytes, cur.net_rx_bytes, dt),
        net_tx_bps=_rate(prev.net_tx_bytes, cur.net_tx_bytes, dt),
        pids=cur.pids,
        at=cur.timestamp,
    )


def worth_sending(last: ReplicaUsage | None, cur: ReplicaUsage) -> bool:
    """Whether ``cur`` differs from the value last sent enough to send it again. Pure."""
    if last is None:
        return True
    return (
        abs(cur.cpu_millis - last.cpu_millis) >= CPU_STEP_MILLIS
        or abs(cur.memory_bytes - last.memory_bytes) >= MEMORY_STEP_BYTES
        or cur.memory_limit_bytes != last.memory_limit_bytes
        or cur.pids != last.pids
        or any(
            abs(a - b) >= RATE_STEP_BPS or (a < 0) != (b < 0)
            for a, b in (
                (cur.disk_read_bps, last.disk_read_bps),
                (cur.disk_write_bps, last.disk_write_bps),
                (cur.net_rx_bps, last.net_rx_bps),
                (cur.net_tx_bps, last.net_tx_bps),
            )
        )
    )


class UsageOutbox:
    """What one stream has been sent; ``take`` returns what is worth sending now."""

    def __init__(self) -> None:
        self.sent: dict[str, ReplicaUsage] = {}

    def take(self, latest: dict[str, ReplicaUsage]) -> tuple[list[ReplicaUsage], list[str]]:
        """(changed entries, ids gone since the last take); both are recorded as sent."""
        changed = [u for rid, u in sorted(latest.items()) if worth_sending(self.sent.get(rid), u)]
        gone = sorted(self.sent.keys() - latest.keys())
        for rid in gone:
            del self.sent[rid]
        for u in changed:
            self.sent[u.replica_id] = u
        return changed, gone


class UsageSampler:
    """Keeps ``latest``: the current usage of every running container of the runtime."""

    TIMEOUT_S = 5.0

    def __init__(
        self, runtime: ContainerRuntime, clock: Clock, interval: Callable[[], float]
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        self.interval = interval
        self.latest: dict[str, ReplicaUsage] = {}
        self._prev: dict[str, ContainerStats] = {}

    async def sample(self) -> None:
        """One round; a runtime that fails or does not answer keeps the last values."""
        try:
            stats = await within(self.TIMEOUT_S, self.runtime.stats_all())
        except (CloudlessError, TimeoutError) as e:
            log.debug("usage sample skipped: %s", e)
            return
        now = {s.id: s for s in stats}
        self.latest = {rid: usage_between(self._prev.get(rid), s) for rid, s in now.items()}
        self._prev = now

    async def run(self) -> None:
        while True:
            await self.sample()
            await self.clock.sleep(self.interval())
