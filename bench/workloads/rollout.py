"""Time from an image change to every replica rolled and ready: 10 replicas on 3 nodes, in the
simulated cluster (real coordinator code, hub, reconciler and agents' supervisors; fake
runtime and fake clock). The figures are simulated seconds: what the roll-out rules and the
protocol cost (batches, readiness probes, heartbeats, reconcile rounds), not container starts
(``bench/results/runtime.json``: create-to-running ~0.1 s per container on containerd)."""

from __future__ import annotations

import time
from typing import Any

from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.rollout import UpdatePolicy
from cloudless.testing.sim import SimCluster, SimView, spec

READY = HealthChecks(readiness=Probe(ProbeKind.EXEC, command=("true",), interval_s=1.0))


async def roll(health: HealthChecks, update: UpdatePolicy) -> dict[str, Any]:
    async with SimCluster() as sim:
        await sim.add_agents(3)

        def all_on(version: int) -> Any:
            def ok(v: SimView) -> bool:
                reps = v.running("web")
                return len(reps) == 10 and all(r.spec_version == version and r.ready for r in reps)

            return ok

        await sim.apply(spec("web", 10, image="web:1", health=health, update=update))
        await sim.until(all_on(1), within=60, what="v1 ready")
        wall = time.perf_counter()
        await sim.apply(spec("web", 10, image="web:2", health=health, update=update))
        took = await sim.until(all_on(2), within=300, what="v2 rolled", every=0.05)
        return {
            "simulated_s": round(took, 2),
            "wall_s": round(time.perf_counter() - wall, 2),
            "batch": update.batch(10),
        }


async def measure() -> dict[str, Any]:
    return {
        "readiness_1s_batch_2": await roll(READY, UpdatePolicy()),
        "readiness_1s_batch_5": await roll(READY, UpdatePolicy(max_unavailable=5)),
        "no_check_min_ready_10s_batch_2": await roll(HealthChecks(), UpdatePolicy()),
    }
