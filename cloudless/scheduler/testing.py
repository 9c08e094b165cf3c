"""Builders for tests and a generator of heterogeneous clusters for benchmarks.

``node("n1", cpu="4", memory="8Gi", zone="eu-1a")`` and ``spec("web", cpu="500m",
max_per_node=1)`` make small readable fixtures; ``generate_cluster(5000, seed=1)`` makes a
mixed fleet (servers, desktops, laptops, Raspberry Pis over 3 regions x 3 zones, some
cordoned/offline/under pressure, labels on a fraction of nodes).
"""

from __future__ import annotations

import random
from dataclasses import fields
from typing import Any

from cloudless.model.node import Node, NodeConditions, NodeState
from cloudless.model.replica import Replica
from cloudless.model.resources import Resources, parse_cpu, parse_rate, parse_size
from cloudless.model.workload import (
    LabelExpr,
    Operator,
    Placement,
    SpreadConstraint,
    WorkloadAffinity,
    WorkloadSpec,
)

GI = 2**30
MI = 2**20
_PLACEMENT_FIELDS = {f.name for f in fields(Placement)}


def res(
    cpu: str | float = 0, memory: str | int = 0, disk: str | int = 0, bw: str | int = 0
) -> Resources:
    return Resources(parse_cpu(cpu), parse_size(memory), parse_size(disk), parse_rate(bw))


def node(
    id: str,
    *,
    cpu: str | float = "4",
    memory: str | int = "8Gi",
    disk: str | int = "100Gi",
    bandwidth: str | int = "1Gbps",
    zone: str = "z1",
    region: str = "r1",
    state: NodeState = NodeState.READY,
    labels: dict[str, str] | None = None,
    **kw: Any,
) -> Node:
    """A ready node whose allocatable (and capacity) is the given resources."""
    r = res(cpu, memory, disk, bandwidth)
    kw.setdefault("capacity", r)
    return Node.make(id, labels=labels, allocatable=r, zone=zone, region=region, state=state, **kw)


def spec(
    name: str = "web",
    *,
    cpu: str | float = "100m",
    memory: str | int = "128Mi",
    disk: str | int = 0,
    bandwidth: str | int = 0,
    replicas: int = 1,
    ports: tuple[int, ...] = (),
    **placement: Any,
) -> WorkloadSpec:
    """A workload spec; keyword arguments named like ``Placement`` fields go to placement."""
    unknown = set(placement) - _PLACEMENT_FIELDS
    if unknown:
        raise TypeError(f"spec(): unknown placement fields {sorted(unknown)}")
    return WorkloadSpec(
        name=name,
        image="img",
        resources=res(cpu, memory, disk, bandwidth),
        replicas=replicas,
        ports=ports,
        placement=Placement(**placement),
    )


def replica(id: str, workload: str, node_id: str) -> Replica:
    return Replica(id=id, workload=workload, node_id=node_id)


def sel(key: str, op: str, *values: str) -> LabelExpr:
    return LabelExpr(key, Operator(op), tuple(values))


def anti(workload: str, key: str = "node") -> WorkloadAffinity:
    return WorkloadAffinity(workload, key, anti=True)


def spread(key: str = "zone", skew: int = 1) -> SpreadConstraint:
    return SpreadConstraint(key, skew)


# --- generated clusters --------------------------------------------------------------------

_CLASSES = (
    # device_class, arch, weight, cpu choices, memory GiB choices, disk GiB, bandwidth Mbps
    ("server", "amd64", 0.35, (16, 32, 64), (64, 128, 256), 1000, 10000),
    ("desktop", "amd64", 0.30, (4, 8, 16), (8, 16, 32), 500, 1000),
    ("laptop", "amd64", 0.20, (2, 4, 8), (4, 8, 16), 250, 300),
    ("rpi", "arm64", 0.15, (4,), (2, 4, 8), 32, 100),
)


def generate_cluster(n: int, seed: int = 1, *, label_fraction: float = 0.3) -> list[Node]:
    """``n`` mixed nodes over regions r1..r3, zones r<i>-a..c; deterministic for ``seed``."""
    rng = random.Random(seed)
    weights = [c[2] for c in _CLASSES]
    out = []
    for i in range(n):
        dc, arch, _, cpus, mems, disk, mbps = rng.choices(_CLASSES, weights)[0]
        region = f"r{rng.randint(1, 3)}"
        zone = f"{region}-{rng.choice('abc')}"
        alloc = Resources(
            rng.choice(cpus) * 1000, rng.choice(mems) * GI, disk * GI, mbps * 1_000_000
        )
        roll = rng.random()
        state = (
            NodeState.READY
            if roll < 0.92
            else NodeState.CORDONED
            if roll < 0.95
            else NodeState.OFFLINE
            if roll < 0.98
            else NodeState.DRAINING
        )
        labels: dict[str, str] = {}
        if rng.random() < label_fraction:
            labels["ssd"] = "true"
            if dc == "server" and rng.random() < 0.3:
                labels["gpu"] = rng.choice(("a100", "t4"))
            labels["tier"] = rng.choice(("gold", "silver", "bronze"))
        out.append(
            Node.make(
                f"node-{i:05d}",
                labels=labels,
                region=region,
                zone=zone,
                arch=arch,
                device_class=dc,
                capacity=alloc,
                allocatable=alloc,
                state=state,
                conditions=NodeConditions(memory_pressure=rng.random() < 0.02),
                reliability=round(rng.uniform(0.5, 1.0), 3),
                public=rng.random() < 0.2,
                nat=rng.random() < 0.7,
                cost_per_hour=round(rng.uniform(0.0, 2.0), 2) if dc == "server" else 0.0,
            )
        )
    return out


def generate_workloads(k: int, seed: int = 2) -> list[WorkloadSpec]:
    """``k`` mixed workload specs: mostly plain, some with selectors, spread, per-node limits,
    anti-affinity to themselves, preferred zones."""
    rng = random.Random(seed)
    out = []
    for i in range(k):
        kw: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.15:
            kw["node_selector"] = (sel("ssd", "exists"),)
        elif roll < 0.25:
            kw["spread"] = (spread("zone"),)
        elif roll < 0.32:
            kw["max_per_node"] = 2
        elif roll < 0.36:
            kw["arch"] = ("arm64",)
        elif roll < 0.45:
            kw["preferred_zones"] = (rng.choice(("r1-a", "r2-b", "r3-c")),)
        out.append(
            spec(
                f"wl-{i:03d}",
                cpu=f"{rng.choice((100, 250, 500, 1000, 2000))}m",
                memory=f"{rng.choice((64, 128, 256, 512, 1024, 2048))}Mi",
                disk=f"{rng.choice((0, 1, 5))}Gi",
                **kw,
            )
        )
    return out
