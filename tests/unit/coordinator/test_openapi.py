"""``/openapi.json`` lists every route the API serves, with schemas generated from the models
that validate requests; every ``$ref`` resolves; the spec schema takes what answers carry."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.coordinator.userapi.console.routes import Console
from cloudless.coordinator.userapi.models import ScaleRequest, TokenRequest, WorkloadSpecDoc
from cloudless.coordinator.userapi.openapi import spec
from cloudless.coordinator.userapi.telemetry import CoordinatorTelemetry
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict
from cloudless.security.revocation import RevocationList
from tests.unit.coordinator.route_api import route_only_api

FULL = """
name: hello
image: 127.0.0.1:5000/busybox:latest
command: [httpd, -f]
env: {GREETING: hi}
resources: {cpu: 100m, memory: 32Mi}
replicas: 3
restart: {policy: on-failure, max_restarts: 5}
placement:
  node_selector: [{key: arch, operator: in, values: [amd64]}]
  spread: [zone]
labels: {tier: web}
ports: [8080]
"""


def served_routes() -> set[tuple[str, str]]:
    """Every API route the coordinator serves: the user API's own, its telemetry's and the
    console's login route (the console's ``/ui`` pages are for browsers, not the API)."""
    api = route_only_api()  # routes only: no handler runs
    state = api.state
    app = api.app()
    CoordinatorTelemetry(state, {}).install(app)

    async def nothing(*_: object) -> Any:
        raise AssertionError("no handler runs")

    Console(
        state=state,
        clock=FakeClock(),
        revocations=RevocationList(),
        identity_of=lambda _: "",
        explain=nothing,
        logs=nothing,
    ).install(app)
    return {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        and not (r.resource.canonical == "/ui" or r.resource.canonical.startswith("/ui/"))
    }


def test_every_route_is_documented_and_no_other() -> None:
    documented = {(method, path) for path, ops in spec()["paths"].items() for method in ops}
    assert documented == served_routes()


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    validate(spec())  # raises with the offending path


def test_every_ref_resolves() -> None:
    doc = spec()
    for ref in refs(doc):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert target, ref


@pytest.mark.parametrize(
    ("model", "required", "field"),
    [
        (ScaleRequest, ["replicas"], "replicas"),
        (TokenRequest, [], "ttl_seconds"),
        (WorkloadSpecDoc, ["image", "name"], "resources"),
    ],
)
def test_request_schemas_are_the_validating_models(
    model: type, required: list[str], field: str
) -> None:
    schema = spec()["components"]["schemas"][model.__name__]
    assert schema.get("additionalProperties") is False  # unknown fields refused
    assert sorted(schema.get("required", [])) == required
    assert field in schema["properties"]


def test_token_ttl_schema_is_bounded() -> None:
    ttl = spec()["components"]["schemas"]["TokenRequest"]["properties"]["ttl_seconds"]
    assert ttl["exclusiveMinimum"] == 0 and ttl["maximum"] == 366 * 24 * 3600


def test_spec_schema_takes_the_canonical_form() -> None:
    canonical = workload_to_dict(parse_workload(FULL))
    assert WorkloadSpecDoc.model_validate(canonical).name == "hello"
    ports = [53, {"port": 80, "publish": 8080}]
    published = workload_to_dict(parse_workload({"name": "w", "image": "busybox", "ports": ports}))
    assert published["ports"] == [53, {"port": 80, "publish": 8080}]
    WorkloadSpecDoc.model_validate(published)
    assert not list(validator("WorkloadSpecDoc").iter_errors(published))


VALUES = st.none() | st.booleans() | st.integers(-5, 70_000) | st.floats(-1, 5000)
TEXTS = st.sampled_from(["", "x", "sh", "500m", "1Gi", "100Mbps", "always", "never", "a b"])
SCALARS = VALUES | TEXTS
FIELD_VALUES = {
    "command": SCALARS | st.lists(SCALARS, max_size=3),
    "args": SCALARS | st.lists(SCALARS, max_size=3),
    "env": SCALARS | st.dictionaries(st.sampled_from(["A", "B=C", "a b"]), SCALARS, max_size=2),
    "labels": SCALARS | st.dictionaries(st.sampled_from(["tier", "a b"]), SCALARS, max_size=2),
    "resources": SCALARS
    | st.dictionaries(st.sampled_from(["cpu", "memory", "disk", "gpu"]), SCALARS, max_size=3),
    "replicas": SCALARS,
    "restart": SCALARS | st.fixed_dictionaries({"policy": SCALARS}),
    "placement": SCALARS | st.fixed_dictionaries({"max_per_node": SCALARS}),
    "ports": SCALARS
    | st.lists(
        SCALARS | st.fixed_dictionaries({"port": SCALARS}, optional={"publish": SCALARS}),
        max_size=2,
    ),
    "stop_timeout": SCALARS,
}
DOCS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["web", "a-1", "Web", ""]),
        "image": st.sampled_from(["busybox", "127.0.0.1:5000/x:1", "Busybox", ""]),
    },
    optional=FIELD_VALUES,
)


@cache
def validator(name: str) -> Any:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    schemas = spec()["components"]["schemas"]
    return Draft202012Validator({**schemas[name], "components": {"schemas": schemas}})


@settings(max_examples=200, deadline=None)
@given(DOCS)
def test_the_spec_schema_takes_every_spec_the_server_takes(doc: dict[str, Any]) -> None:
    try:
        parse_workload(doc)
    except ValidationError:
        return
    WorkloadSpecDoc.model_validate(doc)
    assert not list(validator("WorkloadSpecDoc").iter_errors(doc)), doc


@pytest.mark.parametrize(
    ("model", "doc"),
    [
        (ScaleRequest, {"replicas": 3, "extra": 1}),  # unknown field
        (ScaleRequest, {"replicas": 10_001}),  # MAX_REPLICAS + 1
        (TokenRequest, {"ttl_seconds": 0}),
        (WorkloadSpecDoc, {"name": "Bad Name", "image": "x"}),
    ],
)
def test_the_published_schema_refuses_what_the_server_refuses(model: type, doc: Any) -> None:
    assert list(validator(model.__name__).iter_errors(doc)), doc
