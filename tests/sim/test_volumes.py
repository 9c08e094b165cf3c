"""Workloads with volumes in the simulated cluster: stable ids, and a replica whose node goes
away waits for it (and comes back in place) or is recreated elsewhere, as the spec says."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cloudless.model.replica import ReplicaState
from cloudless.model.volumes import NodeLoss, Volume
from cloudless.testing.sim import SimCluster, spec

DATA = (Volume("data", "/data"),)


async def test_stable_ids_and_waiting_for_the_node_with_the_data() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(3)
        await sim.apply(spec("db", 3, volumes=DATA))
        await sim.until(lambda v: len(v.running("db")) == 3, within=5, what="3 running")
        v = await sim.view()
        assert sorted(r.id for r in v.of("db")) == ["db-0", "db-1", "db-2"]
        r1 = next(r for r in v.of("db") if r.id == "db-1")
        holder = next(a for a in agents if a.node_id == r1.node_id)
        await holder.kill()  # the agent dies; the node goes offline
        await sim.until(
            lambda v: v.workloads["db"].unplaced == 1, within=5, what="db-1 reported waiting"
        )
        v = await sim.view()
        reason = v.workloads["db"].unplaced_reason
        assert f"db-1 waits for node {r1.node_id} holding its volumes" in reason
        assert sorted(r.id for r in v.of("db")) == ["db-0", "db-1", "db-2"]  # no replacement
        await sim.run_for(5)
        assert len((await sim.view()).of("db")) == 3
        holder.start()  # back: db-1 runs again on the same node
        await sim.until(lambda v: len(v.running("db")) == 3, within=10, what="db-1 back")
        v = await sim.view()
        assert next(r for r in v.of("db") if r.id == "db-1").node_id == r1.node_id
        assert v.workloads["db"].unplaced == 0
        await sim.check()


async def test_recreate_moves_the_replica_empty_to_another_node() -> None:
    async with SimCluster() as sim:
        agents = await sim.add_agents(3)
        await sim.apply(spec("db", 2, volumes=DATA, on_node_loss=NodeLoss.RECREATE))
        await sim.until(lambda v: len(v.running("db")) == 2, within=5, what="2 running")
        v = await sim.view()
        r1 = next(r for r in v.of("db") if r.id == "db-1")
        await next(a for a in agents if a.node_id == r1.node_id).crash_host()
        await sim.until(
            lambda v: any(
                r.id == "db-1" and r.node_id != r1.node_id and r.observed is ReplicaState.RUNNING
                for r in v.of("db")
            ),
            within=10,
            what="db-1 recreated elsewhere",
        )
        assert sorted(r.id for r in (await sim.view()).of("db")) == ["db-0", "db-1"]


def found(root: Path, pattern: str) -> int:
    return len(list(root.glob(pattern)))


async def test_delete_keeps_volumes_unless_asked() -> None:
    async with SimCluster() as sim:
        await sim.add_agents(2)
        await sim.apply(spec("db", 2, volumes=DATA))
        await sim.apply(spec("kv", 1, volumes=DATA))
        await sim.until(
            lambda v: len(v.running("db")) + len(v.running("kv")) == 3, within=5, what="running"
        )
        root = Path(sim.volumes.name)
        assert found(root, "*/db/db-*/data") == 2
        await sim.delete("kv")  # plain delete: the data stays on its node
        await sim.until(lambda v: "kv" not in v.workloads, within=10, what="kv gone")
        assert found(root, "*/kv/kv-0/data") == 1
        await sim.delete("db", volumes=True)
        await sim.until(lambda v: "db" not in v.workloads, within=10, what="db gone")
        for _ in range(200):  # deleted in a thread: real time
            if not found(root, "*/db"):
                break
            await asyncio.sleep(0.01)
        assert found(root, "*/db") == 0  # its replicas' data, then the workload's directory
        assert found(root, "*/kv/kv-0/data") == 1  # the other workload's is kept
