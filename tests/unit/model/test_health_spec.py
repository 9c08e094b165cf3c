"""The ``health:`` block of a workload spec: parsing, round trip, and bad input by field path."""

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.health import HealthChecks, Probe, ProbeKind
from cloudless.model.health_codec import parse_duration
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict


def spec(health: Any, ports: list[int] | None = None) -> dict[str, Any]:
    return {"name": "web", "image": "r/web:1", "ports": ports or [8080], "health": health}


def test_parses_both_checks() -> None:
    s = parse_workload(
        spec(
            {
                "liveness": {
                    "exec": ["test", "-f", "/tmp/alive"],
                    "interval": "5s",
                    "timeout": "500ms",
                    "failure_threshold": 2,
                    "start_grace": "1m",
                },
                "readiness": {"http": {"port": 8080, "path": "/healthz"}, "interval": 2},
            }
        )
    )
    assert s.health.liveness == Probe(
        ProbeKind.EXEC,
        command=("test", "-f", "/tmp/alive"),
        interval_s=5.0,
        timeout_s=0.5,
        failure_threshold=2,
        start_grace_s=60.0,  # "1m" = 60 s
    )
    assert s.health.readiness == Probe(
        ProbeKind.HTTP, port=8080, path="/healthz", interval_s=2.0, timeout_s=1.0
    )


def test_shorthands() -> None:
    s = parse_workload(spec({"liveness": {"exec": "pgrep httpd"}, "readiness": {"tcp": 8080}}))
    assert s.health.liveness is not None and s.health.readiness is not None
    assert s.health.liveness.command == ("sh", "-c", "pgrep httpd")
    assert s.health.readiness.kind is ProbeKind.TCP and s.health.readiness.port == 8080


def test_roundtrip_and_absent_when_unset() -> None:
    s = parse_workload(spec({"readiness": {"tcp": {"port": 8080}, "interval": 0.5}}))
    assert parse_workload(workload_to_dict(s)) == s
    plain = parse_workload({"name": "web", "image": "r/web:1"})
    assert plain.health == HealthChecks()
    assert "health" not in workload_to_dict(plain)  # agents that predate health still parse it


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.25, 0.25),
        ("500ms", 0.5),  # 500 x 0.001
        ("5s", 5.0),
        ("2m", 120.0),  # 2 x 60
        ("1h", 3600.0),
        (" 3 ", 3.0),  # no unit = seconds
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


BAD: list[tuple[Any, str]] = [
    ("yes", "spec.health: expected a mapping"),
    ({"startup": {}}, "spec.health.startup: unknown field"),
    ({"liveness": {}}, "spec.health.liveness: needs exactly one of exec, http, tcp (got none)"),
    (
        {"liveness": {"exec": ["true"], "tcp": 8080}},
        "spec.health.liveness: needs exactly one of exec, http, tcp (got exec, tcp)",
    ),
    ({"liveness": {"exec": []}}, "spec.health.liveness.exec: expected a non-empty command"),
    ({"liveness": {"exec": [1, 2]}}, "spec.health.liveness.exec: every argument must be"),
    ({"liveness": {"exec": ["x"] * 65}}, "spec.health.liveness.exec: 65 arguments, at most 64"),
    # absurd intervals: 0, 1 ms, a week, negative, infinite, not a duration
    ({"liveness": {"exec": ["true"], "interval": 0}}, "interval: 0s is out of range [0.1s, 3600s]"),
    ({"liveness": {"exec": ["true"], "interval": "1ms"}}, "interval: 0.001s is out of range"),
    ({"liveness": {"exec": ["true"], "interval": "168h"}}, "interval: 604800s is out of range"),
    ({"liveness": {"exec": ["true"], "interval": -1}}, "interval: -1 is not a duration of zero"),
    ({"liveness": {"exec": ["true"], "interval": float("inf")}}, "interval: inf is not a duration"),
    ({"liveness": {"exec": ["true"], "interval": "soon"}}, "interval: 'soon' is not a duration"),
    ({"liveness": {"exec": ["true"], "interval": True}}, "interval: True is not a duration"),
    (
        {"liveness": {"exec": ["true"], "interval": 1, "timeout": 5}},
        "spec.health.liveness.timeout: 5s is longer than the interval (1s)",
    ),
    ({"liveness": {"exec": ["true"], "timeout": "10m"}}, "timeout: 600s is out of range"),
    ({"liveness": {"exec": ["true"], "failure_threshold": 0}}, "failure_threshold: 0 is out of"),
    ({"liveness": {"exec": ["true"], "success_threshold": 1000}}, "success_threshold: 1000 is"),
    ({"liveness": {"exec": ["true"], "success_threshold": 1.5}}, "success_threshold: 1.5 is not"),
    ({"liveness": {"exec": ["true"], "start_grace": "2h"}}, "start_grace: 7200s is out of range"),
    ({"liveness": {"exec": ["true"], "every": 1}}, "spec.health.liveness.every: unknown field"),
    ({"readiness": {"http": {"path": "/"}}}, "spec.health.readiness.http.port: is required"),
    (
        {"readiness": {"http": {"port": 9090}}},
        "spec.health.readiness.http.port: 9090 is not a declared port (spec.ports: 8080)",
    ),
    ({"readiness": {"tcp": {"port": 70000}}}, "tcp.port: 70000 is not a port number 1-65535"),
    ({"readiness": {"tcp": "8080"}}, "spec.health.readiness.tcp: expected a mapping with port"),
    ({"readiness": {"http": {"port": 8080, "path": "health"}}}, "http.path: 'health' is not a URL"),
    ({"readiness": {"http": {"port": 8080, "path": "/a b"}}}, "http.path: '/a b' is not a URL"),
    ({"readiness": {"http": {"port": 8080, "host": "x"}}}, "http.host: unknown field"),
]


@pytest.mark.parametrize(("health", "problem"), BAD)
def test_bad_input_names_the_field(health: Any, problem: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(spec(health))
    assert any(problem in p for p in e.value.problems), e.value.problems


def test_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(
            spec(
                {
                    "liveness": {"exec": ["true"], "interval": 0, "failure_threshold": -1},
                    "readiness": {"tcp": {"port": 1}},
                }
            )
        )
    assert len(e.value.problems) == 3
