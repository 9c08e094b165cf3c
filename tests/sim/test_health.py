"""Health checks across the simulated cluster: readiness reaches the replica record through
the real hub, and a node cut off from the coordinators keeps probing and restarting."""

from __future__ import annotations

from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.replica import ReplicaState
from cloudless.runtime.fake import FakeBehavior, FakeExec
from cloudless.testing.sim import SimCluster, spec

CHECK = Probe(ProbeKind.EXEC, command=("check",), interval_s=1.0, failure_threshold=2)


async def test_readiness_reaches_the_replica_record() -> None:
    healthy = {"db-0": False}

    def run(argv: tuple[str, ...]) -> FakeExec:
        return FakeExec(0) if all(healthy.values()) else FakeExec(1, "warming up")

    async with SimCluster() as sim:
        (agent,) = await sim.add_agents(1)
        agent.set_behavior(FakeBehavior(exec=run), image="db")
        await sim.apply(spec("db", 1, image="db", health=HealthChecks(readiness=CHECK)))
        await sim.until(lambda v: len(v.running("db")) == 1, within=5, what="running")
        await sim.run_for(2.5)  # two failed probes: failing, with its reason
        (r,) = (await sim.view()).of("db")
        assert not r.ready and r.health == "readiness exec check: exit 1: warming up"
        healthy["db-0"] = True
        took = await sim.until(lambda v: v.of("db")[0].ready, within=5, what="ready")
        assert took <= 1.5  # the next probe (1 s interval) plus a heartbeat sent at once
        healthy["db-0"] = False
        await sim.until(lambda v: not v.of("db")[0].ready, within=5, what="not ready")
        assert (await sim.view()).of("db")[0].observed is ReplicaState.RUNNING


async def test_liveness_restarts_go_on_while_the_node_is_cut_off() -> None:
    async with SimCluster() as sim:
        (agent,) = await sim.add_agents(1)
        agent.set_behavior(FakeBehavior(exec=lambda argv: FakeExec(1)), image="db")
        await sim.apply(spec("db", 1, image="db", health=HealthChecks(liveness=CHECK)))
        await sim.until(lambda v: len(v.running("db")) == 1, within=5, what="running")
        starts = agent.starts
        agent.partition()
        await sim.run_for(12)
        # Each incarnation fails at its second probe (1 s after its start), then waits its
        # backoff (1, 2, 4 s): starts at +2, +5 and +10 s, 3 more in 12 s, all while the node
        # has no coordinator in reach.
        assert agent.starts >= starts + 3
