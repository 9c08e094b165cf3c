"""Published device ports (``ports: [{port, publish}]``): one device port carries one container,
so a node where a replica already publishes one of the workload's device ports is refused,
with the port named."""

from __future__ import annotations

from dataclasses import replace

from cloudless.model.workload import PublishedPort, WorkloadSpec
from cloudless.scheduler import Scheduler, Snapshot
from cloudless.scheduler.testing import node, replica, spec

READY3 = [node("a"), node("b"), node("c")]


def publishing(name: str, *pairs: tuple[int, int]) -> WorkloadSpec:
    s = spec(name, ports=tuple(p for p, _ in pairs))
    return replace(s, published=tuple(PublishedPort(p, h) for p, h in pairs))


WEB = publishing("web", (8080, 18080))
ADMIN = publishing("admin", (9000, 18080), (9001, 19001))  # 18080 too
OTHER = publishing("other", (8080, 28080))  # same container port, another device port

CASES = [
    # (id, spec placed, existing replicas, workloads, fit, refused counts)
    ("nothing published yet: all fit", WEB, [], {}, 3, {}),
    (
        # admin publishes 18080 on a: web (18080) may go to b and c only
        "another workload holds the device port",
        WEB,
        [replica("ad0", "admin", "a")],
        {"admin": ADMIN},
        2,
        {"device port 18080 already published there": 1},
    ),
    (
        # web's own replica on b holds 18080: a second web replica cannot share b
        "its own replica holds it",
        WEB,
        [replica("w0", "web", "b")],
        {"web": WEB},
        2,
        {"device port 18080 already published there": 1},
    ),
    (
        # other publishes 28080 (same container port 8080): no clash
        "same container port, other device port",
        WEB,
        [replica("o0", "other", "a"), replica("o1", "other", "b")],
        {"other": OTHER},
        3,
        {},
    ),
]


def test_table() -> None:
    for name, s, replicas, workloads, fit, counts in CASES:
        snap = Snapshot.build(READY3, replicas, {**workloads})
        ex = Scheduler().explain(snap, s)
        assert (ex.rejections.fit, ex.rejections.as_dict()) == (fit, counts), name
        assert fit + sum(counts.values()) == len(READY3), name


def test_replicas_beyond_the_free_devices_stay_unplaced_with_the_reason() -> None:
    # 3 nodes, admin on a holds 18080: web x3 -> b and c, the third refused everywhere
    snap = Snapshot.build(READY3, [replica("ad0", "admin", "a")], {"admin": ADMIN})
    plan = Scheduler().place(snap, replace(WEB, replicas=3), 3)
    assert sorted(a.node_id for a in plan.assignments) == ["b", "c"]
    (u,) = plan.unplaced
    assert u.count == 1
    assert u.reason == "0/3 nodes fit: 3 device port 18080 already published there"
