"""The leader's usage board and the rows of ``cloudless top``: only a node's own replicas are
taken, departures and closed streams drop values, and rows join usage with the records."""

from __future__ import annotations

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.dispatcher.usage_board import UsageBoard, node_rows, replica_rows
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.resources import Resources

MiB = 1 << 20


def rep(rid: str, node: str, observed: ReplicaState = ReplicaState.RUNNING) -> Replica:
    return Replica(rid, "web", node_id=node, spec_version=1, observed=observed, restarts=1)


def entry(rid: str, cpu: int, mem_mib: int = 10) -> pb.ReplicaUsage:
    return pb.ReplicaUsage(
        replica_id=rid, cpu_millis=cpu, memory_bytes=mem_mib * MiB, memory_limit_bytes=64 * MiB,
        net_rx_bps=-1, net_tx_bps=-1, pids=1, sampled_at=5.0,
    )  # fmt: skip


REPS = {r.id: r for r in (rep("a", "n1"), rep("b", "n1"), rep("c", "n2"))}


def test_only_a_nodes_own_replicas_are_taken() -> None:
    board = UsageBoard()
    board.take("n1", [entry("a", 100), entry("c", 999), entry("ghost", 5)], [], REPS)
    assert board.get("a", "n1") is not None
    assert board.get("c", "n2") is None  # reported by n1, but c is n2's
    assert board.get("ghost", "n1") is None


def test_departures_and_closed_streams_drop_values() -> None:
    board = UsageBoard()
    board.take("n1", [entry("a", 100), entry("b", 200)], [], REPS)
    board.take("n2", [entry("c", 300)], [], REPS)
    board.take("n1", [], ["b", "c"], REPS)  # c is not n1's to drop
    assert (board.get("a", "n1"), board.get("b", "n1")) != (None, None)
    assert board.get("b", "n1") is None and board.get("c", "n2") is not None
    board.forget_node("n1")
    assert board.get("a", "n1") is None and board.get("c", "n2") is not None


def test_rows_join_usage_with_records() -> None:
    board = UsageBoard()
    board.take("n1", [entry("a", 100, 10), entry("b", 250, 30)], [], REPS)
    reps = [*REPS.values(), rep("d", "n1", ReplicaState.FAILED)]
    rows = replica_rows(reps, board)
    # d is not running: no row; c runs but has not been measured yet.
    assert [(r["id"], r["measured"], r.get("cpu_millis")) for r in rows] == [
        ("a", True, 100), ("b", True, 250), ("c", False, None),
    ]  # fmt: skip
    assert rows[0]["restarts"] == 1 and rows[0]["memory_limit_bytes"] == 64 * MiB
    nodes = [
        Node.make(
            n, name=n.upper(), state=NodeState.READY,
            allocatable=Resources(cpu_millis=2000, memory_bytes=4096 * MiB),
            usage=Resources(cpu_millis=700, memory_bytes=1024 * MiB),
        )
        for n in ("n2", "n1")
    ]  # fmt: skip
    by_id = {r["id"]: r for r in node_rows(nodes, reps, board)}
    # n1: a + b measured: 100 + 250 = 350 millis, 10 + 30 = 40 MiB; d failed is not counted.
    assert (by_id["n1"]["replicas"], by_id["n1"]["replicas_cpu_millis"]) == (2, 350)
    assert by_id["n1"]["replicas_memory_bytes"] == 40 * MiB
    assert (by_id["n2"]["replicas"], by_id["n2"]["replicas_cpu_millis"]) == (1, 0)
    assert by_id["n2"]["cpu_allocatable_millis"] == 2000 and by_id["n2"]["state"] == "ready"
