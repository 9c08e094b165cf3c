"""Live replica usage on the leader, fed by heartbeats, and the rows ``cloudless top`` shows.

Usage is observed and short-lived, so it stays in the leader's memory and is never written to
the store (a write per replica per heartbeat would dominate the store's load). Agents send a
replica's usage when it changes noticeably and every replica's on a new stream, so a new
leader's board fills within one heartbeat interval. ``replica_rows`` and ``node_rows`` are pure
functions over the board and the replica and node records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.model.node import Node
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.usage import ReplicaUsage


def usage_from_pb(u: pb.ReplicaUsage) -> ReplicaUsage:
    return ReplicaUsage(
        replica_id=u.replica_id,
        cpu_millis=u.cpu_millis,
        memory_bytes=u.memory_bytes,
        memory_limit_bytes=u.memory_limit_bytes,
        disk_read_bps=u.disk_read_bps,
        disk_write_bps=u.disk_write_bps,
        net_rx_bps=u.net_rx_bps,
        net_tx_bps=u.net_tx_bps,
        pids=u.pids,
        at=u.sampled_at,
    )


class UsageBoard:
    """Replica id -> (node id, its last usage). Only a node's own replicas are taken."""

    def __init__(self) -> None:
        self._by_replica: dict[str, tuple[str, ReplicaUsage]] = {}

    def take(
        self,
        node_id: str,
        entries: Iterable[pb.ReplicaUsage],
        gone: Iterable[str],
        owns: dict[str, Replica],
    ) -> None:
        for rid in gone:
            if self._by_replica.get(rid, ("",))[0] == node_id:
                del self._by_replica[rid]
        for e in entries:
            r = owns.get(e.replica_id)
            if r is not None and r.node_id == node_id:
                self._by_replica[e.replica_id] = (node_id, usage_from_pb(e))

    def forget_node(self, node_id: str) -> None:
        """A new stream resends everything; a closed one's values are no longer current."""
        for rid in [rid for rid, (n, _) in self._by_replica.items() if n == node_id]:
            del self._by_replica[rid]

    def get(self, replica_id: str, node_id: str) -> ReplicaUsage | None:
        got = self._by_replica.get(replica_id)
        return got[1] if got is not None and got[0] == node_id else None


def _usage_fields(u: ReplicaUsage | None) -> dict[str, Any]:
    if u is None:
        return {"measured": False}
    d = u.to_dict()
    del d["replica_id"]
    return {"measured": True, **d}


def replica_rows(replicas: Iterable[Replica], board: UsageBoard) -> list[dict[str, Any]]:
    """One row per running replica: its identity, restarts, and usage when measured."""
    rows = []
    for r in sorted(replicas, key=lambda r: r.id):
        if r.observed is not ReplicaState.RUNNING:
            continue
        rows.append(
            {
                "id": r.id,
                "workload": r.workload,
                "node_id": r.node_id,
                "restarts": r.restarts,
                "ready": r.ready,
                **_usage_fields(board.get(r.id, r.node_id)),
            }
        )
    return rows


def node_rows(
    nodes: Iterable[Node], replicas: Iterable[Replica], board: UsageBoard
) -> list[dict[str, Any]]:
    """One row per node: its measured usage against what it offers, and the sum of its
    running replicas' usage (what the node's own processes and the rest use is the gap)."""
    running: dict[str, list[Replica]] = {}
    for r in replicas:
        if r.observed is ReplicaState.RUNNING:
            running.setdefault(r.node_id, []).append(r)
    rows = []
    for n in sorted(nodes, key=lambda n: n.id):
        mine = running.get(n.id, [])
        used = [u for r in mine if (u := board.get(r.id, n.id)) is not None]
        rows.append(
            {
                "id": n.id,
                "name": n.name,
                "state": n.state.value,
                "cpu_millis": n.usage.cpu_millis,
                "cpu_allocatable_millis": n.allocatable.cpu_millis,
                "memory_bytes": n.usage.memory_bytes,
                "memory_allocatable_bytes": n.allocatable.memory_bytes,
                "replicas": len(mine),
                "replicas_cpu_millis": sum(u.cpu_millis for u in used),
                "replicas_memory_bytes": sum(u.memory_bytes for u in used),
                "last_heartbeat": n.last_heartbeat,
            }
        )
    return rows
