"""The coordinator's network plan (table) and one reconcile round against a MemoryStore."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.clock import FakeClock
from cloudless.model.node import NodeState
from cloudless.model.replica import ReplicaState
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.controller import NetworkController, plan_network, routed
from cloudless.network.services import ReplicaAddress, ServiceKey
from cloudless.network.state import ServiceRecord, list_services
from cloudless.scheduler.testing import node, replica, spec
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

PLAN = AddressPlanConfig().plan()
R, GONE = NodeState.READY, NodeState.REMOVED
WEB = ServiceKey("default", "web")


def rec(name: str, *eps: tuple[str, str], total: int = 0) -> ServiceRecord:
    from cloudless.network.state import EndpointRecord, PortRecord

    return ServiceRecord(
        "default",
        name,
        "10.43.0.1",
        (PortRecord(80),),
        endpoints=tuple(EndpointRecord(ip, r, "a") for ip, r in eps),
        total=total,
    )


CASES = [
    # (nodes, workloads, replicas, slots, services) -> (assign, release, upsert, delete, eps)
    ({"a": R, "b": R}, {}, {}, {"a": 0}, {}, (["b"], [], [], [], [])),
    ({"a": R, "b": GONE}, {}, {}, {"a": 0, "b": 1}, {}, ([], ["b"], [], [], [])),
    ({"a": R}, {}, {}, {"a": 0, "c": 2}, {}, ([], ["c"], [], [], [])),  # c vanished
    # a workload with ports becomes a service; its running replica on a (slot 0) an endpoint
    (
        {"a": R},
        {"web": (False, (80,))},
        {"web": [ReplicaAddress("r1", "a", "10.42.0.5")]},
        {"a": 0},
        {},
        ([], [], ["web"], [], [("web", ["10.42.0.5"], 1)]),
    ),
    # nothing changed: no writes
    (
        {"a": R},
        {"web": (False, (80,))},
        {"web": [ReplicaAddress("r1", "a", "10.42.0.5")]},
        {"a": 0},
        {WEB: rec("web", ("10.42.0.5", "r1"), total=1)},
        ([], [], [], [], []),
    ),
    # the replica reports a device address (outside 10.42.0.0/24): 0 ready of 1
    (
        {"a": R},
        {"web": (False, (80,))},
        {"web": [ReplicaAddress("r1", "a", "192.168.1.5")]},
        {"a": 0},
        {WEB: rec("web", ("10.42.0.5", "r1"), total=1)},
        ([], [], [], [], [("web", [], 1)]),
    ),
    # deleted workload / no ports: the service goes
    ({"a": R}, {"web": (True, (80,))}, {}, {"a": 0}, {WEB: rec("web")}, ([], [], [], [WEB], [])),
    ({"a": R}, {"web": (False, ())}, {}, {"a": 0}, {WEB: rec("web")}, ([], [], [], [WEB], [])),
    # ports changed: re-applied (VIP kept by assign_service)
    (
        {"a": R},
        {"web": (False, (80, 443))},
        {},
        {"a": 0},
        {WEB: rec("web")},
        ([], [], ["web"], [], []),
    ),
]


@pytest.mark.parametrize(("nodes", "wls", "reps", "slots", "svcs", "want"), CASES)
def test_plan(nodes, wls, reps, slots, svcs, want) -> None:  # type: ignore[no-untyped-def]
    p = plan_network(nodes, wls, reps, slots, svcs, PLAN)
    assign, release, upsert, delete, eps = want
    assert list(p.assign) == assign
    assert list(p.release) == release
    assert [s.key.name for s in p.upsert] == upsert
    assert list(p.delete) == delete
    assert [(u.key.name, [str(e.ip) for e in u.endpoints], u.total) for u in p.endpoints] == eps


def test_bad_workload_name_is_a_problem_not_a_crash() -> None:
    p = plan_network({}, {"Web_1": (False, (80,))}, {}, {}, {}, PLAN)
    assert p.upsert == ()
    assert "is not a DNS label" in p.problems[0]


async def test_reconcile_round_writes_slots_services_and_endpoints() -> None:
    store = MemoryStore(FakeClock())
    state = ClusterState(store)
    await state.nodes.put("n1", node("n1"))
    await state.nodes.put("n2", node("n2"))
    await state.workloads.put("web", WorkloadRecord(spec("web", ports=(8080,))))
    ctl = NetworkController(state, PLAN, FakeClock())
    await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert (svc.name, svc.vip, svc.endpoints, svc.total) == ("web", "10.43.0.1", (), 0)
    # a replica runs on n2 (slot 1 -> 10.42.1.0/24) and reports its container address
    r = replace(
        replica("r1", "web", "n2"), observed=ReplicaState.RUNNING, endpoint="10.42.1.7:8080"
    )
    await state.replicas.put("web/r1", r)
    await ctl.reconcile_once(NO_FENCE)
    [svc] = await list_services(store)
    assert [(e.ip, e.replica, e.device_id) for e in svc.endpoints] == [("10.42.1.7", "r1", "n2")]
    # the workload is deleted: the service and its VIP go
    await state.workloads.put(
        "web", replace(WorkloadRecord(spec("web", ports=(8080,))), deleted=True)
    )
    p = await ctl.reconcile_once(NO_FENCE)
    assert p.delete == (WEB,)
    assert await list_services(store) == []
    assert (await ctl.reconcile_once(NO_FENCE)).empty


def _registration(**data: object) -> bytes:
    base = {"name": "n1", "zone": "z1", "capacity": 1, "rpc_url": "u", "s3_url": "s", "beat": 1}
    return json.dumps({"kind": "objectstore_node", "version": 1, "data": {**base, **data}}).encode()


# (two registrations as stored, whether the network must look again)
ROUTED = [
    (_registration(beat=1), _registration(beat=2), False),
    (_registration(disk_free=10, disk_size=99), _registration(disk_free=7, disk_size=99), False),
    (_registration(refusing_writes=False), _registration(refusing_writes=True), False),
    (_registration(s3_gateway=""), _registration(s3_gateway="10.0.0.2:9000"), True),
    (_registration(s3_url="a"), _registration(s3_url="b"), True),
    (_registration(), b"", True),  # deleted
]


@pytest.mark.parametrize(("before", "after", "changed"), ROUTED)
def test_only_what_the_network_routes_by_wakes_it(
    before: bytes, after: bytes, changed: bool
) -> None:
    assert (routed(before) != routed(after)) is changed
