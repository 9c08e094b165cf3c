"""Tables for the pure parts of the observability plane: cluster gauges, the SD document,
agent per-replica series, address checks."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from cloudless.agent.supervisor import LocalStatus
from cloudless.agent.telemetry import replica_families
from cloudless.coordinator.state.cluster_view import ClusterView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.telemetry import cluster_families
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.resources import Resources
from cloudless.model.workload import WorkloadSpec
from cloudless.observability.http import metrics_address_problem, parse_listen, sd_targets
from cloudless.observability.metrics import FamiliesCollector, exposition
from cloudless.runtime.types import ContainerStats


def node(i: str, state: NodeState, zone: str = "a", **kw: object) -> Node:
    return Node.make(
        i,
        name=f"name-{i}",
        zone=zone,
        state=state,
        allocatable=Resources(2000, 4 << 30),
        usage=Resources(500, 1 << 30),
        **kw,  # type: ignore[arg-type]
    )


def rep(i: str, w: str, obs: ReplicaState, desired: DesiredState = DesiredState.RUNNING) -> Replica:
    return Replica(id=i, workload=w, node_id="n1", desired=desired, observed=obs)


def samples(families: list) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[type-arg]
    reg = CollectorRegistry()
    col = FamiliesCollector()
    col.update(families)
    reg.register(col)
    text = exposition(reg)[0].decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


VIEW = ClusterView(
    nodes={
        "n1": node("n1", NodeState.READY, "a"),
        "n2": node("n2", NodeState.READY, "b"),
        "n3": node("n3", NodeState.OFFLINE, "b"),
        "n4": node("n4", NodeState.REMOVED, "c"),
    },
    workloads={
        "web": WorkloadRecord(spec=WorkloadSpec(name="web", image="x", replicas=3)),
        "old": WorkloadRecord(spec=WorkloadSpec(name="old", image="x", replicas=1), deleted=True),
    },
    replicas={
        "r1": rep("r1", "web", ReplicaState.RUNNING),
        "r2": rep("r2", "web", ReplicaState.RUNNING),
        "r3": rep("r3", "web", ReplicaState.LOST),
        "r4": rep("r4", "web", ReplicaState.RUNNING, DesiredState.STOPPED),
    },
)


@pytest.mark.parametrize(
    ("name", "labels", "want"),
    [
        ("cloudless_nodes", {"state": "ready"}, 2),  # n1, n2
        ("cloudless_nodes", {"state": "offline"}, 1),  # n3; removed n4 not counted anywhere
        ("cloudless_nodes", {"state": "draining"}, 0),  # every state present, zero or not
        ("cloudless_zone_nodes", {"zone": "b", "state": "offline"}, 1),
        ("cloudless_ready_cpu_cores", {"kind": "allocatable"}, 4.0),  # 2 ready x 2000m
        ("cloudless_ready_cpu_cores", {"kind": "used"}, 1.0),  # 2 x 500m
        ("cloudless_ready_memory_bytes", {"kind": "used"}, 2 << 30),  # 2 x 1 GiB
        ("cloudless_replicas", {"state": "running"}, 2),  # r1, r2; r4 is desired stopped
        ("cloudless_replicas", {"state": "lost"}, 1),  # r3
        ("cloudless_workload_replicas_wanted", {"workload": "web"}, 3),
        ("cloudless_workload_replicas_running", {"workload": "web"}, 2),
        ("cloudless_workload_replicas_unplaced", {"workload": "web"}, 0),
    ],
)
def test_cluster_families(name: str, labels: dict[str, str], want: float) -> None:
    got = samples(cluster_families(VIEW))
    assert got[(name, tuple(sorted(labels.items())))] == want


def test_deleted_workloads_and_removed_nodes_have_no_series() -> None:
    got = samples(cluster_families(VIEW))
    assert not any(dict(lbl).get("workload") == "old" for _, lbl in got)
    assert not any(dict(lbl).get("zone") == "c" for _, lbl in got)
    assert not any(dict(lbl).get("state") == "removed" for _, lbl in got)


def test_series_count_does_not_grow_with_nodes() -> None:
    """5,000 nodes in 3 zones give the same series as 3 nodes: no per-node label."""
    big = ClusterView(
        nodes={f"n{i}": node(f"n{i}", NodeState.READY, "abc"[i % 3]) for i in range(5000)},
        workloads={},
        replicas={},
    )
    small = ClusterView(
        nodes={f"n{i}": node(f"n{i}", NodeState.READY, "abc"[i % 3]) for i in range(3)},
        workloads={},
        replicas={},
    )
    assert samples(cluster_families(big)).keys() == samples(cluster_families(small)).keys()


def test_sd_targets() -> None:
    nodes = [
        node("n2", NodeState.READY, "b", metrics_address="http://10.0.0.2:9100"),
        node("n1", NodeState.OFFLINE, "a", metrics_address="https://[fd00::1]:9100"),
        node("n3", NodeState.READY, "a"),  # serves no metrics: not listed
        node("n4", NodeState.REMOVED, "a", metrics_address="http://10.0.0.4:9100"),
    ]
    doc = sd_targets([("c1", "https://10.0.0.1:8443")], nodes)
    assert doc == [
        {
            "targets": ["10.0.0.1:8443"],
            "labels": {
                "__scheme__": "https",
                "__meta_cloudless_role": "coordinator",
                "__meta_cloudless_coordinator": "c1",
            },
        },
        {
            "targets": ["[fd00::1]:9100"],
            "labels": {
                "__scheme__": "https",
                "__meta_cloudless_role": "agent",
                "__meta_cloudless_node": "name-n1",
                "__meta_cloudless_node_id": "n1",
                "__meta_cloudless_zone": "a",
                "__meta_cloudless_state": "offline",
            },
        },
        {
            "targets": ["10.0.0.2:9100"],
            "labels": {
                "__scheme__": "http",
                "__meta_cloudless_role": "agent",
                "__meta_cloudless_node": "name-n2",
                "__meta_cloudless_node_id": "n2",
                "__meta_cloudless_zone": "b",
                "__meta_cloudless_state": "ready",
            },
        },
    ]


# Bad input from a device: its advertised metrics address.
@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", ""),  # none advertised: fine
        ("http://10.0.0.2:9100", ""),
        ("https://[fd00::1]:9100", ""),
        ("ftp://10.0.0.2:9100", "must start with http:// or https://"),
        ("10.0.0.2:9100", "must start with http:// or https://"),
        ("http://10.0.0.2", "is not HOST:PORT"),
        ("http://10.0.0.2:99999", "is not HOST:PORT"),
        ("http://10.0.0.2:0", "is not HOST:PORT"),
        ("http://evil\n:9100", "control or space characters"),
        ("http://a b:9100", "control or space characters"),
        ("http://" + "a" * 300 + ":1", "at most 255"),
    ],
)
def test_metrics_address_problem(address: str, problem: str) -> None:
    got = metrics_address_problem(address)
    assert (problem in got) if problem else got == ""


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_listen(spec: str, want: tuple[str, int]) -> None:
    assert parse_listen(spec) == want


@pytest.mark.parametrize("spec", ["9100", ":9100", "host:", "host:port", "h:70000", "h:-1"])
def test_parse_listen_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        parse_listen(spec)


def test_replica_families() -> None:
    statuses = [
        LocalStatus("r1", "web", 1, ReplicaState.RUNNING, restarts=2),
        LocalStatus("r2", "web", 1, ReplicaState.FAILED),
    ]
    stats = {"r1": ContainerStats("r1", 1_500_000_000, 64 << 20, 128 << 20, 3, 0.0)}
    got = samples(replica_families(statuses, stats))  # type: ignore[arg-type]
    key = (("replica", "r1"), ("workload", "web"))
    assert got[("cloudless_agent_replicas", (("state", "running"),))] == 1
    assert got[("cloudless_agent_replicas", (("state", "failed"),))] == 1
    assert got[("cloudless_replica_restarts_total", key)] == 2
    assert got[("cloudless_replica_cpu_seconds_total", key)] == 1.5  # 1.5e9 ns
    assert got[("cloudless_replica_memory_bytes", key)] == 64 << 20
    assert got[("cloudless_replica_memory_limit_bytes", key)] == 128 << 20
    # r2 is not running: no stats sample, so no CPU or memory series
    assert ("cloudless_replica_memory_bytes", (("replica", "r2"), ("workload", "web"))) not in got
