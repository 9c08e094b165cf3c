import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.node import Node
from cloudless.model.replica import ReplicaState, advance
from cloudless.model.workload import LabelExpr, Operator, RestartMode, parse_workload
from cloudless.model.workload_codec import workload_to_dict

GOOD = """
name: hello
image: 127.0.0.1:5000/busybox:latest
command: [httpd, -f, -p, "8080"]
env: {GREETING: hi, N: 3}
resources: {cpu: 100m, memory: 32Mi, disk: 1Gi}
replicas: 3
restart: {policy: on-failure, max_restarts: 5}
placement:
  node_selector: [{key: arch, operator: in, values: [amd64, arm64]}]
  affinity:
    preferred_nodes: [{match: {zone: eu-1a}, weight: 30}]
    required_anti_workloads: [{workload: db, topology_key: node}]
  spread: [zone]
  max_per_node: 1
  preferred_regions: [eu]
"""


def test_parses_full_spec() -> None:
    s = parse_workload(GOOD)
    assert s.name == "hello"
    assert s.command == ("httpd", "-f", "-p", "8080")
    assert dict(s.env) == {"GREETING": "hi", "N": "3"}
    assert s.resources.cpu_millis == 100
    assert s.resources.memory_bytes == 32 * 2**20
    assert s.replicas == 3
    assert s.restart.mode is RestartMode.ON_FAILURE
    assert s.placement.node_selector == (LabelExpr("arch", Operator.IN, ("amd64", "arm64")),)
    assert s.placement.preferred_node_affinity[0].weight == 30
    assert s.placement.required_workload_affinity[0].anti
    assert s.placement.spread[0].topology_key == "zone"
    assert s.placement.max_per_node == 1


def test_roundtrip() -> None:
    s = parse_workload(GOOD)
    assert parse_workload(workload_to_dict(s)) == s


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            {"name": "x", "image": "i", "resources": {"memory": "12XB"}},
            'spec.resources.memory: "12XB" is not a size',
        ),
        ({"image": "i"}, "spec.name: is required"),
        ({"name": "Bad_Name", "image": "i"}, "spec.name:"),
        ({"name": "x"}, "spec.image: is required"),
        ({"name": "x", "image": "i", "replicas": -1}, "spec.replicas: -1 is out of range"),
        ({"name": "x", "image": "i", "replicas": "three"}, "spec.replicas: 'three' is not a whole"),
        ({"name": "x", "image": "i", "restart": "sometimes"}, "spec.restart.policy:"),
        ({"name": "x", "image": "i", "colour": "red"}, "spec.colour: unknown field"),
        (
            {
                "name": "x",
                "image": "i",
                "placement": {"node_selector": [{"key": "a", "operator": "like"}]},
            },
            "spec.placement.node_selector[0].operator: 'like' is not an operator",
        ),
        (
            {
                "name": "x",
                "image": "i",
                "placement": {"node_selector": [{"key": "a", "operator": "="}]},
            },
            "spec.placement.node_selector[0].values: operator = needs exactly one value",
        ),
        ({"name": "x", "image": "i", "ports": [70000]}, "spec.ports[0]: 70000 is out of range"),
        ("name: [unclosed", "spec: is not valid YAML or JSON"),
        ("- a list", "spec: expected a mapping, got list"),
    ],
)
def test_invalid_specs_name_the_field(doc: object, problem: str) -> None:
    with pytest.raises(ValidationError) as ei:
        parse_workload(doc)
    assert any(problem in p for p in ei.value.problems), ei.value.problems


def test_reports_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as ei:
        parse_workload({"name": "", "image": "", "replicas": -3, "resources": {"cpu": "x"}})
    assert len(ei.value.problems) == 4


@pytest.mark.parametrize(
    ("expr", "labels", "matches"),
    [
        (LabelExpr("zone", Operator.EQ, ("a",)), {}, True),
        (LabelExpr("zone", Operator.NE, ("a",)), {}, False),
        (LabelExpr("gpu", Operator.EXISTS), {"gpu": "1"}, True),
        (LabelExpr("gpu", Operator.EXISTS), {}, False),
        (LabelExpr("gpu", Operator.NOT_EXISTS), {}, True),
        (LabelExpr("zone", Operator.IN, ("b", "a")), {}, True),
        (LabelExpr("zone", Operator.NOT_IN, ("b", "a")), {}, False),
    ],
)
def test_label_expr(expr: LabelExpr, labels: dict[str, str], matches: bool) -> None:
    assert expr.matches(Node.make("n", labels=labels, zone="a")) is matches


def test_restart_policy() -> None:
    s = parse_workload(
        {"name": "x", "image": "i", "restart": {"policy": "on-failure", "max_restarts": 2}}
    )
    assert s.restart.should_restart(1, 0)
    assert not s.restart.should_restart(0, 0)  # clean exit, on-failure
    assert not s.restart.should_restart(1, 2)  # max reached
    assert s.restart.delay(3) == 8.0  # 1 * 2**3


def test_replica_state_moves_forward() -> None:
    R = ReplicaState
    assert advance(R.PULLING, R.RUNNING, True)
    assert not advance(R.RUNNING, R.PULLING, True)
    assert advance(R.EXITED, R.STARTING, False)  # new incarnation
    assert advance(R.LOST, R.RUNNING, True)
