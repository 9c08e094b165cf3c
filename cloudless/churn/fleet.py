"""A simulated fleet: devices of the trace classes as scheduler ``Node`` records, with a
trace each, and the services the churn simulator keeps running."""

from __future__ import annotations

import random
from collections.abc import Mapping

from cloudless.churn.traces import WEEK_S, Trace, synthetic
from cloudless.model.node import Node, NodeState
from cloudless.model.resources import Resources
from cloudless.model.workload import Placement, SpreadConstraint, WorkloadSpec

GI = 2**30
#: class -> (millicores, memory GiB, arch)
SHAPES = {
    "server": (16000, 64, "amd64"),
    "laptop": (8000, 16, "amd64"),
    "iot": (4000, 4, "arm64"),
    "phone": (2000, 4, "arm64"),
}
DEFAULT_MIX = {"server": 4, "laptop": 8, "iot": 6, "phone": 6}


def fleet(
    rng: random.Random,
    mix: Mapping[str, int] | None = None,
    *,
    length: float = 2 * WEEK_S,
    max_availability: float = 0.9,
    measured_from: float = WEEK_S,
) -> tuple[list[Node], dict[str, Trace]]:
    """Nodes and traces; a trace whose availability over ``[measured_from, length)`` is above
    ``max_availability`` is drawn again (so no device exceeds it)."""
    nodes, traces = [], {}
    sites = 4
    i = 0
    for cls, n in (mix or DEFAULT_MIX).items():
        cpu, mem, arch = SHAPES[cls]
        for _ in range(n):
            d = f"{cls}-{i:02d}"
            tr = synthetic(cls, d, rng, length)
            while tr.availability(measured_from, length) > max_availability:
                tr = synthetic(cls, d, rng, length)
            traces[d] = tr
            alloc = Resources(cpu, mem * GI, 32 * GI, 100_000_000)
            nodes.append(
                Node.make(
                    d,
                    zone=f"site-{i % sites}",
                    region="home",
                    arch=arch,
                    device_class=cls,
                    capacity=alloc,
                    allocatable=alloc,
                    state=NodeState.READY,
                )
            )
            i += 1
    return nodes, traces


def services(
    counts: tuple[int, ...] = (1, 2, 3, 4, 5),
    *,
    copies: int = 2,
    cpu_millis: int = 1000,
    memory_gib: int = 2,
    spread_key: str = "",
) -> list[WorkloadSpec]:
    """``copies`` services per replica count (``svc-r3-0``...), at most one replica per
    device; ``spread_key``: also spread each over that topology key (max skew 1)."""
    spread = (SpreadConstraint(spread_key, 1),) if spread_key else ()
    return [
        WorkloadSpec(
            name=f"svc-r{r}-{k}",
            image="svc",
            resources=Resources(cpu_millis, memory_gib * GI, 0, 0),
            replicas=r,
            placement=Placement(max_per_node=1, spread=spread),
        )
        for r in counts
        for k in range(copies)
    ]
