"""``python -m bench.cluster_scale.simulated [N]``: the simulator at N nodes (default 5,000).

``SimCluster`` (the product's agent and coordinator code over the in-memory transport, fixed
0.1 s steps): N agents until every node is ready, 500 replicas applied until running, 10 s
steady, invariants checked. Prints simulated and wall seconds of each phase: how fast the
simulation runs, not how fast a cluster is.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

from cloudless.model.node import NodeState
from cloudless.testing.sim import SimCluster, spec


async def main(n: int) -> None:
    w0 = time.perf_counter()
    async with SimCluster(exact=False, step_s=0.1) as sim:
        await sim.add_agents(n)
        ready = await sim.until(
            lambda v: all(x.state is NodeState.READY for x in v.nodes.values()),
            within=30,
            what="ready",
            every=0.5,
        )
        w1 = time.perf_counter()
        await sim.apply(spec("web", 500))
        running = await sim.until(
            lambda v: len(v.running("web")) == 500, within=30, what="500 running", every=0.5
        )
        w2 = time.perf_counter()
        await sim.run_for(10)
        w3 = time.perf_counter()
        await sim.check()
    print(
        f"{n} agents: ready {ready:.1f}s sim / {w1 - w0:.1f}s wall; 500 running "
        f"{running:.1f}s sim / {w2 - w1:.1f}s wall; 10 s steady {w3 - w2:.1f}s wall"
    )


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
