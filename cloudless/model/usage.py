"""Live usage of one replica, as an agent measures it and ``cloudless top`` shows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ReplicaUsage:
    """Rates over the agent's last sampling interval, ending at ``at`` (wall clock).
    ``memory_limit_bytes`` 0: no limit. ``net_*_bps`` -1: not measured (the replica shares its
    node's network namespace, so no counter is its own)."""

    replica_id: str
    cpu_millis: int
    memory_bytes: int
    memory_limit_bytes: int
    disk_read_bps: int
    disk_write_bps: int
    net_rx_bps: int
    net_tx_bps: int
    pids: int
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
