"""Filters, one table row per rule: who fits, and every refused node counted once under the
first reason it fails (so fit + sum(counts) == nodes)."""

from __future__ import annotations

import pytest

from cloudless.model.node import NodeConditions, NodeState
from cloudless.model.workload import AffinityTerm, WorkloadAffinity
from cloudless.scheduler import Scheduler, Snapshot
from cloudless.scheduler.testing import anti, node, replica, sel, spec
from cloudless.scheduler.testing import spread as spread_c

READY3 = [node("a"), node("b"), node("c")]

CASES = [
    # (id, nodes, spec, replicas, expected fit, expected counts)
    ("all fit", READY3, spec(), [], 3, {}),
    (
        "states: only ready nodes take replicas",
        [
            node("a"),
            node("b", state=NodeState.CORDONED),
            node("c", state=NodeState.DRAINING),
            node("d", state=NodeState.OFFLINE),
            node("e", state=NodeState.FAILED),
        ],
        spec(),
        [],
        1,
        {"cordoned": 1, "draining": 1, "offline": 1, "failed": 1},
    ),
    (
        "pressure",
        [
            node("a", conditions=NodeConditions(memory_pressure=True)),
            node("b", conditions=NodeConditions(disk_pressure=True)),
            node("c"),
        ],
        spec(),
        [],
        1,
        {"memory pressure": 1, "disk pressure": 1},
    ),
    (
        # 4 cpu nodes: a request of 5 cpu fails on cpu first; 2 cpu + 16Gi fails on memory
        "resources: first short dimension",
        [node("a", cpu="4", memory="8Gi"), node("b", cpu="8", memory="8Gi")],
        spec(cpu="5", memory="16Gi"),
        [],
        0,
        {"insufficient cpu": 1, "insufficient memory": 1},
    ),
    (
        # node a holds 3 x 1 cpu of "x" -> 4 - 3 = 1 cpu free < 2 requested
        "resources: allocated by existing replicas",
        [node("a", cpu="4"), node("b", cpu="4")],
        spec(cpu="2"),
        [replica(f"x{i}", "x", "a") for i in range(3)],
        1,
        {"insufficient cpu": 1},
    ),
    (
        "selector in / notin / exists",
        [
            node("a", zone="eu-1a", labels={"ssd": "true"}),
            node("b", zone="eu-1b", labels={"ssd": "true"}),
            node("c", zone="eu-1a"),
        ],
        spec(node_selector=(sel("zone", "in", "eu-1a"), sel("ssd", "exists"))),
        [],
        1,
        {"zone not in [eu-1a]": 1, "no label ssd": 1},
    ),
    (
        "selector = and !=",
        [node("a", labels={"tier": "gold"}), node("b", labels={"tier": "bronze"}), node("c")],
        spec(node_selector=(sel("tier", "!=", "bronze"), sel("tier", "=", "gold"))),
        [],
        1,
        {"tier is bronze": 1, "tier is not gold": 1},
    ),
    (
        "arch and device class",
        [
            node("a", arch="arm64", device_class="rpi"),
            node("b", arch="amd64", device_class="server"),
            node("c", arch="arm64", device_class="laptop"),
        ],
        spec(arch=("arm64",), device_classes=("rpi",)),
        [],
        1,
        {"arch not in [arm64]": 1, "device class not in [rpi]": 1},
    ),
    (
        # terms are ORed: a matches the first, b the second, c neither
        "required node affinity",
        [node("a", zone="z1"), node("b", labels={"gpu": "t4"}), node("c", zone="z2")],
        spec(
            required_node_affinity=(
                AffinityTerm((sel("zone", "=", "z1"),)),
                AffinityTerm((sel("gpu", "exists"),)),
            )
        ),
        [],
        2,
        {"required node affinity not matched": 1},
    ),
    (
        "network: public and bandwidth",
        [
            node("a", public=True, bandwidth="1Gbps"),
            node("b", public=False),
            node("c", public=True, bandwidth="10Mbps"),
        ],
        spec(needs_public=True, min_bandwidth_bps=100_000_000),
        [],
        1,
        {"not publicly reachable": 1, "bandwidth below 100Mbps": 1},
    ),
    (
        "max_per_node counts existing replicas",
        READY3,
        spec("web", max_per_node=1),
        [replica("w0", "web", "a"), replica("w1", "web", "b")],
        1,
        {"max_per_node 1 reached": 2},
    ),
    (
        # db runs in zone z1 (nodes a, b): anti-affinity on zone refuses both
        "anti-affinity to another workload by zone",
        [node("a", zone="z1"), node("b", zone="z1"), node("c", zone="z2")],
        spec("web", required_workload_affinity=(anti("db", "zone"),)),
        [replica("d0", "db", "a")],
        1,
        {"replica of db in the same zone": 2},
    ),
    (
        "affinity to another workload by node",
        READY3,
        spec("web", required_workload_affinity=(WorkloadAffinity("cache", "node"),)),
        [replica("c0", "cache", "b")],
        1,
        {"no replica of cache in the same node": 2},
    ),
    (
        "self anti-affinity per node",
        READY3,
        spec("web", required_workload_affinity=(anti("web", "node"),)),
        [replica("w0", "web", "c")],
        2,
        {"replica of web in the same node": 1},
    ),
    (
        # zones z1: 2 replicas, z2: 0 -> placing in z1 gives 3 - 0 = 3 > 1
        "spread skew",
        [node("a", zone="z1"), node("b", zone="z1"), node("c", zone="z2")],
        spec("web", spread=(spread_c("zone"),)),
        [replica("w0", "web", "a"), replica("w1", "web", "b")],
        1,
        {"spread on zone would exceed max_skew 1": 2},
    ),
    (
        "max_per_domain and missing topology label",
        [node("a", zone="z1"), node("b", zone="z2"), node("c", zone="")],
        spec("web", max_per_domain=(("zone", 1),)),
        [replica("w0", "web", "a")],
        1,
        {"max_per_domain zone=1 reached": 1, "no zone label": 1},
    ),
]


@pytest.mark.parametrize(
    ("nodes", "s", "replicas", "fit", "counts"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_filter_table(nodes, s, replicas, fit, counts) -> None:  # type: ignore[no-untyped-def]
    snap = Snapshot.build(nodes, replicas, {"x": spec("x", cpu="1"), "web": s})
    ex = Scheduler().explain(snap, s)
    assert ex.rejections.fit == fit
    assert ex.rejections.as_dict() == counts
    assert fit + sum(counts.values()) == len(nodes)


def test_symmetric_anti_affinity() -> None:
    # db refuses to share a node with web; db runs on a -> web may not go to a
    db = spec("db", required_workload_affinity=(anti("web", "node"),))
    snap = Snapshot.build(READY3, [replica("d0", "db", "a")], {"db": db})
    ex = Scheduler().explain(snap, spec("web"))
    assert ex.rejections.as_dict() == {"db refuses to share its node": 1}


def test_unplaced_message_counts() -> None:
    nodes = [node("a", cpu="1"), node("b", cpu="1"), node("c", state=NodeState.CORDONED)]
    plan = Scheduler().place(Snapshot.build(nodes), spec(cpu="2"), 2)
    assert plan.assignments == ()
    (u,) = plan.unplaced
    assert (u.first_index, u.count) == (0, 2)
    assert u.reason == "0/3 nodes fit: 2 insufficient cpu, 1 cordoned"


def test_empty_cluster() -> None:
    plan = Scheduler().place(Snapshot.build([]), spec(), 1)
    assert plan.unplaced[0].reason == "0/0 nodes fit: the cluster has no nodes"
