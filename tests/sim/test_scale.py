"""Scale smoke test: 1,000 simulated agents and a 2,000-replica mix on one coordinator.

Bounds are in simulated seconds; wall time is printed for the report, never asserted (the
machine is shared and noisy). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import time

from cloudless.model.node import NodeState
from cloudless.model.workload import Placement, SpreadConstraint
from cloudless.testing.sim import SimCluster, SimView, spec

AGENTS = 1000
MIX = [
    spec("web", 800, cpu=100, placement=Placement(spread=(SpreadConstraint("zone"),))),
    spec("api", 600, cpu=250, memory=256 << 20),
    spec("batch", 400, cpu=50, memory=32 << 20),
    spec("db", 200, cpu=500, memory=1 << 30, placement=Placement(max_per_node=1)),
]  # 2,000 replicas; 350 CPU cores asked of 1,000 x 4 cores


def converged(v: SimView) -> bool:
    return all(len(v.running(w.name)) == w.replicas for w in MIX)


async def test_thousand_agents_two_thousand_replicas_converge() -> None:
    wall0 = time.perf_counter()
    # Fixed 0.1 s steps: stepping to every one of ~3,000 timers a second costs more than
    # the precision is worth here.
    async with SimCluster(exact=False, step_s=0.1) as sim:
        agents = await sim.add_agents(AGENTS)
        ready_s = await sim.until(
            lambda v: all(n.state is NodeState.READY for n in v.nodes.values()),
            within=5,
            what="1,000 ready nodes",
            every=0.5,
        )
        # 1,000 nodes <= 1,000 (500 heartbeats/s at 2 s): the base 2 s interval.
        assert {a.stats.intervals[-1] for a in agents} == {2.0}
        wall1 = time.perf_counter()
        for w in MIX:
            await sim.apply(w)
        converge_s = await sim.until(converged, within=30, what="2,000 running", every=0.5)
        wall2 = time.perf_counter()
        v = await sim.view()
        zones = {z: 0 for z in ("zone-a", "zone-b", "zone-c")}
        for r in v.running("web"):
            zones[v.nodes[r.node_id].zone] += 1
        assert max(zones.values()) - min(zones.values()) <= 1  # 800 over 3 zones
        await sim.check("after placement")

        # Lose 1% of the machines at once.
        victims = [a for a in agents if v.on_node(a.node_id)][:10]
        lost = sum(len(v.on_node(a.node_id)) for a in victims)
        for a in victims:
            await a.crash_host()
        replace_s = await sim.until(
            lambda v: (
                converged(v) and all(v.state(a.node_id) is NodeState.OFFLINE for a in victims)
            ),
            within=15,
            what=f"{lost} replicas of 10 lost nodes replaced",
            every=0.5,
        )
        await sim.check("after replacement")
        rounds = sim.brains[0].reconciler.rounds
        leader = sim.leader()
        assert leader is not None
        t = time.perf_counter()
        assert await leader.reconciler.round(leader.election.fence()) == []  # settled
        round_s = time.perf_counter() - t
    wall3 = time.perf_counter()
    print(
        f"\n1,000 agents: ready {ready_s:.1f}s sim ({wall1 - wall0:.1f}s wall incl. setup); "
        f"2,000 replicas running {converge_s:.1f}s sim ({wall2 - wall1:.1f}s wall); "
        f"{lost} replicas on 10 crashed hosts replaced {replace_s:.1f}s sim; "
        f"{rounds} reconcile rounds, a settled round takes {round_s * 1000:.0f} ms wall; "
        f"total wall {wall3 - wall0:.1f}s"
    )
