"""The user API never answers 500 to bad input: a table of malformed requests, one class of
bad input per group, each answered with the documented JSON error object (status, ``code``,
and the ``<field path>: <reason>`` problem naming the field), repeating at most a capped
amount of what it was sent, and leaving the cluster's state (every store key outside the
event log) as it was. Then a bounded Hypothesis run of a few hundred random bodies.

One coordinator (in-memory store, real mTLS on loopback) serves the whole module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudless.coordinator.userapi.errors import MAX_ERROR_CHARS
from cloudless.coordinator.userapi.models import (
    Applied,
    CaInfo,
    CoordinatorList,
    ErrorBody,
    Event,
    Explanation,
    Health,
    NodeList,
    ReplicaList,
    TokenCreated,
    TokenList,
    WorkloadList,
    WorkloadView,
)

from .threaded import Answer, Running, running_coordinator

YAML = "application/yaml"
# An error repeats at most MAX_ERROR_CHARS of the input; the rest of the object is fixed text.
MAX_ERROR_BODY = MAX_ERROR_CHARS + 600


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running_coordinator(tmp_path_factory.mktemp("api")) as running:
        ok = running.raw("POST", "/v1/workloads", b"name: web\nimage: busybox\n", content_type=YAML)
        assert ok.status == 201, ok.body
        ok = running.raw("POST", "/v1/tokens", b'{"description": "seed"}')
        assert ok.status == 201, ok.body
        # The reconciler marks the seed workload unplaced (no nodes) on its own time: let
        # it, so no case sees that write as a change its bad request made.
        deadline = time.monotonic() + 20
        while json.loads(running.raw("GET", "/v1/workloads/web").body)["unplaced"] != 1:
            assert time.monotonic() < deadline, "the seed workload was never marked unplaced"
            time.sleep(0.05)
        yield running


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    body: bytes | None = None
    status: int = 400
    code: str = "invalid"
    field: str | None = None  # a problem must read "<field>: ..."
    content_type: str = "application/json"
    auth: bool = True


def spec(extra: str) -> bytes:
    return f"name: bad\nimage: busybox\n{extra}\n".encode()


def jspec(**extra: Any) -> bytes:
    return json.dumps({"name": "bad", "image": "busybox", **extra}).encode()


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJ = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
DEEP_YAML = b"name: bad\nimage: busybox\nlabels: " + b"[" * 50_000
ALIAS_BOMB = b"""name: bad
image: busybox
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""
HUGE_INT = b"9" * 5000
SHA = "0" * 64

CASES = [
    # -- non-finite and absurd numbers (resources, TTLs, replicas), integers past the limit --
    Case(
        "json-infinity",
        "POST",
        "/v1/workloads",
        jspec()[:-1] + b', "replicas": Infinity}',
        field="spec.replicas",
    ),
    Case(
        "json-nan",
        "POST",
        "/v1/workloads",
        jspec()[:-1] + b', "stop_timeout": NaN}',
        field="spec.stop_timeout",
    ),
    Case(
        "json-1e999",
        "POST",
        "/v1/workloads",
        jspec()[:-1] + b', "replicas": 1e999}',
        field="spec.replicas",
    ),
    Case(
        "json-5000-digits",
        "POST",
        "/v1/workloads",
        jspec()[:-1] + b', "replicas": ' + HUGE_INT + b"}",
        field="spec",
    ),
    Case(
        "yaml-5000-digits",
        "POST",
        "/v1/workloads",
        spec("replicas: ") + HUGE_INT,
        field="spec",
        content_type=YAML,
    ),
    Case(
        "yaml-inf-replicas",
        "POST",
        "/v1/workloads",
        spec("replicas: .inf"),
        field="spec.replicas",
        content_type=YAML,
    ),
    Case(
        "yaml-inf-cpu",
        "POST",
        "/v1/workloads",
        spec("resources: {cpu: .inf}"),
        field="spec.resources.cpu",
        content_type=YAML,
    ),
    Case(
        "yaml-nan-memory",
        "POST",
        "/v1/workloads",
        spec("resources: {memory: .nan}"),
        field="spec.resources.memory",
        content_type=YAML,
    ),
    Case(
        "string-inf-cpu",
        "POST",
        "/v1/workloads",
        jspec(resources={"cpu": "inf"}),
        field="spec.resources.cpu",
    ),
    Case(
        "string-nan-cpu",
        "POST",
        "/v1/workloads",
        jspec(resources={"cpu": "NaN"}),
        field="spec.resources.cpu",
    ),
    # 1e300 bytes is past MAX_BYTES = 2**60 (1 EiB)
    Case(
        "absurd-memory",
        "POST",
        "/v1/workloads",
        jspec(resources={"memory": 1e300}),
        field="spec.resources.memory",
    ),
    # 99,999,999,999,999,999,999 Ti = 1.1e32 bytes > 2**60
    Case(
        "absurd-disk-units",
        "POST",
        "/v1/workloads",
        jspec(resources={"disk": "99999999999999999999Ti"}),
        field="spec.resources.disk",
    ),
    # 10**12 cores = 10**15 millicores > MAX_CPU_MILLIS = 10**9
    Case(
        "absurd-cpu",
        "POST",
        "/v1/workloads",
        jspec(resources={"cpu": 10**12}),
        field="spec.resources.cpu",
    ),
    Case(
        "int64-overflow",
        "POST",
        "/v1/workloads",
        jspec(resources={"cpu": 2**70}),
        field="spec.resources.cpu",
    ),
    Case("absurd-replicas", "POST", "/v1/workloads", jspec(replicas=10**9), field="spec.replicas"),
    Case(
        "absurd-backoff",
        "POST",
        "/v1/workloads",
        jspec(restart={"backoff": 1e308}),
        field="spec.restart.backoff",
    ),
    Case(
        "absurd-bandwidth",
        "POST",
        "/v1/workloads",
        jspec(placement={"min_bandwidth": "999999999Gbps"}),
        field="spec.placement.min_bandwidth",
    ),
    Case(
        "drain-deadline-negative",
        "POST",
        "/v1/nodes/nope/drain",
        b'{"deadline_s": -1}',
        field="body.deadline_s",
    ),
    Case(
        "drain-deadline-infinity",
        "POST",
        "/v1/nodes/nope/drain",
        b'{"deadline_s": Infinity}',
        field="body.deadline_s",
    ),
    Case(
        "drain-deadline-text",
        "POST",
        "/v1/nodes/nope/drain",
        b'{"deadline_s": "soon"}',
        field="body.deadline_s",
    ),
    Case(
        "drain-deadline-week-plus",
        "POST",
        "/v1/nodes/nope/drain",
        b'{"deadline_s": 1e7}',
        field="body.deadline_s",
    ),
    Case(
        "scale-infinity",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": Infinity}',
        field="body.replicas",
    ),
    Case(
        "scale-1e999",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": 1e999}',
        field="body.replicas",
    ),
    Case(
        "scale-digits",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": ' + HUGE_INT + b"}",
        field="body",
    ),
    Case(
        "scale-too-many",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": 10001}',
        field="body.replicas",
    ),
    Case(
        "scale-fraction",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": 2.5}',
        field="body.replicas",
    ),
    Case(
        "scale-bool",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": true}',
        field="body.replicas",
    ),
    Case(
        "scale-string",
        "POST",
        "/v1/workloads/web/scale",
        b'{"replicas": "3"}',
        field="body.replicas",
    ),
    Case("scale-not-object", "POST", "/v1/workloads/web/scale", b"[3]", field="body"),
    Case("scale-missing", "POST", "/v1/workloads/web/scale", b"{}", field="body.replicas"),
    Case(
        "ttl-infinity", "POST", "/v1/tokens", b'{"ttl_seconds": Infinity}', field="body.ttl_seconds"
    ),
    Case("ttl-nan", "POST", "/v1/tokens", b'{"ttl_seconds": NaN}', field="body.ttl_seconds"),
    Case("ttl-huge", "POST", "/v1/tokens", b'{"ttl_seconds": 1e300}', field="body.ttl_seconds"),
    Case(
        "ttl-string-inf", "POST", "/v1/tokens", b'{"ttl_seconds": "inf"}', field="body.ttl_seconds"
    ),
    Case("ttl-zero", "POST", "/v1/tokens", b'{"ttl_seconds": 0}', field="body.ttl_seconds"),
    Case("ttl-negative", "POST", "/v1/tokens", b'{"ttl_seconds": -5}', field="body.ttl_seconds"),
    Case("query-digits", "GET", "/v1/events?tail=" + "9" * 5000, field="query.tail"),
    Case("query-negative", "GET", "/v1/events?tail=-1", field="query.tail"),
    Case("query-absurd", "GET", "/v1/workloads/web/explain?top=999999999999", field="query.top"),
    Case("query-not-number", "GET", "/v1/workloads/web/explain?top=inf", field="query.top"),
    # -- deep nesting in any body, unauthenticated ones included ------------------------------
    Case("deep-json-apply", "POST", "/v1/workloads", DEEP_OBJ, field="spec"),
    Case("deep-yaml-apply", "POST", "/v1/workloads", DEEP_YAML, field="spec", content_type=YAML),
    Case("deep-json-explain", "POST", "/v1/explain", DEEP_OBJ, field="spec"),
    Case("deep-json-scale", "POST", "/v1/workloads/web/scale", DEEP_JSON, field="body"),
    Case("deep-json-token", "POST", "/v1/tokens", DEEP_OBJ, field="body"),
    Case(
        "deep-json-join-unauthenticated",
        "POST",
        "/v1/cluster/join",
        DEEP_JSON,
        field="body",
        auth=False,
    ),
    Case(
        "deep-33-levels",
        "POST",
        "/v1/tokens",
        b'{"labels": ' + b"[" * 33 + b"]" * 33 + b"}",
        field="body",
    ),
    # -- YAML alias bombs: refused, never expanded into the error ---------------------------
    Case("alias-bomb", "POST", "/v1/workloads", ALIAS_BOMB, field="spec", content_type=YAML),
    Case("alias-bomb-explain", "POST", "/v1/explain", ALIAS_BOMB, field="spec", content_type=YAML),
    Case(
        "alias-self",
        "POST",
        "/v1/workloads",
        spec("labels: &a [*a]"),
        field="spec",
        content_type=YAML,
    ),
    # -- image references (OCI distribution grammar) -----------------------------------------
    Case("image-upper-case", "POST", "/v1/workloads", jspec(image="BusyBox"), field="spec.image"),
    Case(
        "image-bad-digest",
        "POST",
        "/v1/workloads",
        jspec(image="busybox@sha256:abc"),
        field="spec.image",
    ),
    Case(
        "image-upper-digest",
        "POST",
        "/v1/workloads",
        jspec(image="busybox@sha256:" + SHA.upper().replace("0", "A")),
        field="spec.image",
    ),
    Case(
        "image-unknown-algorithm",
        "POST",
        "/v1/workloads",
        jspec(image="busybox@md5:" + "0" * 32),
        field="spec.image",
    ),
    Case("image-empty-tag", "POST", "/v1/workloads", jspec(image="busybox:"), field="spec.image"),
    Case(
        "image-traversal",
        "POST",
        "/v1/workloads",
        jspec(image="../../etc/passwd"),
        field="spec.image",
    ),
    Case(
        "image-inner-traversal",
        "POST",
        "/v1/workloads",
        jspec(image="library/../busybox"),
        field="spec.image",
    ),
    Case(
        "image-newline", "POST", "/v1/workloads", jspec(image="busybox\nlatest"), field="spec.image"
    ),
    Case("image-control", "POST", "/v1/workloads", jspec(image="busy\x07box"), field="spec.image"),
    Case("image-too-long", "POST", "/v1/workloads", jspec(image="a" * 300), field="spec.image"),
    Case("image-bad-host", "POST", "/v1/workloads", jspec(image="-bad.io/x"), field="spec.image"),
    # -- strings: labels, env, names, YAML types ---------------------------------------------
    Case(
        "label-newline",
        "POST",
        "/v1/workloads",
        jspec(labels={"tier": "a\nb"}),
        field="spec.labels.tier",
    ),
    Case(
        "label-key-space",
        "POST",
        "/v1/workloads",
        jspec(labels={"bad key": "x"}),
        field="spec.labels.bad key",
    ),
    Case("env-nul", "POST", "/v1/workloads", jspec(env={"A": "x\x00y"}), field="spec.env.A"),
    Case("env-name-equals", "POST", "/v1/workloads", jspec(env={"A=B": "x"}), field="spec.env.A=B"),
    Case(
        "command-nul",
        "POST",
        "/v1/workloads",
        jspec(command=["sh", "\x00"]),
        field="spec.command[1]",
    ),
    Case("name-100kb", "POST", "/v1/workloads", jspec(name="a" * 100_000), field="spec.name"),
    Case(
        "unknown-100kb-key",
        "POST",
        "/v1/workloads",
        jspec(**{"k" * 100_000: 1}),
        field="spec." + "k" * 60 + "...",
    ),
    Case(
        "yaml-date",
        "POST",
        "/v1/workloads",
        spec("env: {WHEN: 2024-01-01}"),
        field="spec.env.WHEN",
        content_type=YAML,
    ),
    Case(
        "yaml-binary",
        "POST",
        "/v1/workloads",
        spec("env: {B: !!binary aGk=}"),
        field="spec.env.B",
        content_type=YAML,
    ),
    Case(
        "yaml-python-tag",
        "POST",
        "/v1/workloads",
        spec("x: !!python/object:os.system {}"),
        field="spec",
        content_type=YAML,
    ),
    Case(
        "string-as-bool",
        "POST",
        "/v1/workloads",
        jspec(placement={"needs_public": "no"}),
        field="spec.placement.needs_public",
    ),
    Case(
        "selector-key-control",
        "POST",
        "/v1/workloads",
        jspec(placement={"node_selector": [{"key": "z\x1bone", "operator": "exists"}]}),
        field="spec.placement.node_selector[0].key",
    ),
    Case("not-utf8", "POST", "/v1/workloads", b"name: \xff\xfe", field="spec", content_type=YAML),
    Case("not-a-mapping", "POST", "/v1/workloads", b"[1, 2]", field="spec", content_type=YAML),
    Case("empty-spec", "POST", "/v1/workloads", b"", field="spec", content_type=YAML),
    # -- token requests: unknown fields and bad values ---------------------------------------
    Case("token-unknown-field", "POST", "/v1/tokens", b'{"ttl": 60}', field="body.ttl"),
    Case("token-bad-use", "POST", "/v1/tokens", b'{"use": "root"}', field="body.use"),
    Case(
        "token-label-newline",
        "POST",
        "/v1/tokens",
        b'{"labels": {"zone": "a\\nb"}}',
        field="body.labels",
    ),
    Case(
        "token-label-not-string",
        "POST",
        "/v1/tokens",
        b'{"labels": {"zone": 1}}',
        field="body.labels.zone",
    ),
    Case(
        "token-description-long",
        "POST",
        "/v1/tokens",
        json.dumps({"description": "d" * 5000}).encode(),
        field="body.description",
    ),
    Case("token-not-json", "POST", "/v1/tokens", b"use: x", field="body"),
    Case(
        "join-unknown-field",
        "POST",
        "/v1/cluster/join",
        b'{"token": "t", "name": "c2", "admin": true}',
        field="body.admin",
        auth=False,
    ),
    Case(
        "join-bad-name",
        "POST",
        "/v1/cluster/join",
        b'{"token": "t", "name": "C 2"}',
        field="body.name",
        auth=False,
    ),
    Case("join-nan", "POST", "/v1/cluster/join", b'{"token": NaN}', field="body.token", auth=False),
    # -- framework errors, absent objects and path parameters --------------------------------
    Case("no-route", "GET", "/v1/nope", status=404, code="not_found"),
    Case("wrong-method", "PATCH", "/v1/workloads", b"{}", status=405, code="method_not_allowed"),
    Case("wrong-method-put", "PUT", "/v1/tokens", status=405, code="method_not_allowed"),
    Case(
        "too-large",
        "POST",
        "/v1/workloads",
        b"a" * (2 << 20),
        status=413,
        code="too_large",
        content_type=YAML,
    ),
    Case(
        "too-large-unauthenticated",
        "POST",
        "/v1/cluster/join",
        b"{" * (2 << 20),
        status=413,
        code="too_large",
        auth=False,
    ),
    Case("absent-token", "DELETE", "/v1/tokens/tok-000000000000", status=404, code="not_found"),
    Case("absent-workload", "DELETE", "/v1/workloads/nope", status=404, code="not_found"),
    Case("absent-node", "POST", "/v1/nodes/nope/cordon", status=404, code="not_found"),
    Case("path-id-traversal", "DELETE", "/v1/tokens/..%2F..%2Fworkloads%2Fweb", field="path.id"),
    Case(
        "path-name-control",
        "POST",
        "/v1/workloads/w%0Aeb/scale",
        b'{"replicas": 1}',
        field="path.name",
    ),
    Case("path-node-long", "GET", "/v1/nodes/" + "n" * 1000, field="path.id"),
    Case("unauthenticated", "GET", "/v1/nodes", status=401, code="no_certificate", auth=False),
]


def check_error(a: Answer, status: int, code: str, field: str | None) -> dict[str, Any]:
    assert a.status == status, (a.status, a.body[:300])
    assert a.headers.get("content-type", "").startswith("application/json"), a.headers
    assert len(a.body) <= MAX_ERROR_BODY, f"error of {len(a.body)} bytes echoes its input"
    doc = a.json()
    ErrorBody.model_validate(doc)
    err = doc["error"]
    assert err["code"] == code, err
    if field is not None:
        problems = err.get("problems") or []
        assert any(p.startswith(f"{field}:") or p.startswith(f"{field}.") for p in problems), (
            field,
            problems,
        )
    return dict(err)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_is_refused_and_changes_nothing(api: Running, case: Case) -> None:
    before = api.state()
    a = api.raw(case.method, case.path, case.body, auth=case.auth, content_type=case.content_type)
    check_error(a, case.status, case.code, case.field)
    assert api.state() == before


def test_alias_bomb_error_is_small(api: Running) -> None:
    # 9**7 = 4,782,969 strings once expanded: refused after MAX_VALUES composed values
    a = api.raw("POST", "/v1/workloads", ALIAS_BOMB, content_type=YAML)
    err = check_error(a, 400, "invalid", "spec")
    assert "aliases" in err["message"] and len(a.body) < 400


def test_token_answers_never_carry_the_hash(api: Running) -> None:
    created = api.raw("POST", "/v1/tokens", b'{"ttl_seconds": 60, "labels": {"zone": "a"}}')
    assert created.status == 201
    TokenCreated.model_validate(created.json())  # extra="forbid": no secret_hash
    listed = api.raw("GET", "/v1/tokens")
    TokenList.model_validate(listed.json())
    assert b"secret_hash" not in created.body + listed.body
    assert b"$2b$" not in created.body + listed.body  # no bcrypt hash under another name
    token_id = created.json()["record"]["token_id"]
    revoked = api.raw("DELETE", f"/v1/tokens/{token_id}")
    assert revoked.status == 200 and b"secret_hash" not in revoked.body
    again = api.raw("DELETE", f"/v1/tokens/{token_id}x")
    check_error(again, 404, "not_found", None)


def test_good_answers_match_the_published_models(api: Running) -> None:
    applied = api.raw("POST", "/v1/workloads", b"name: web\nimage: busybox\n", content_type=YAML)
    Applied.model_validate(applied.json())
    WorkloadView.model_validate(api.raw("GET", "/v1/workloads/web").json())
    NodeList.model_validate(api.raw("GET", "/v1/nodes").json())
    for path, model in (
        ("/healthz", Health),
        ("/v1/ca", CaInfo),
        ("/v1/workloads", WorkloadList),
        ("/v1/replicas", ReplicaList),
        ("/v1/cluster/coordinators", CoordinatorList),
        ("/v1/workloads/web/explain?top=3", Explanation),
    ):
        a = api.raw("GET", path)
        assert a.status == 200, (path, a.body[:200])
        model.model_validate(a.json())
    scaled = api.raw("POST", "/v1/workloads/web/scale", b'{"replicas": 1}')
    WorkloadView.model_validate(scaled.json())
    lines = api.raw("GET", "/v1/events?tail=5").body.splitlines()
    assert lines and all(Event.model_validate(json.loads(line)) for line in lines)
    doc = api.raw("GET", "/openapi.json").json()
    assert "/v1/cluster/join" in doc["paths"] and "TokenRequest" in doc["components"]["schemas"]


# ---- fuzzing: a few hundred random requests --------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
SPEC_KEYS = ["name", "image", "command", "env", "resources", "replicas", "restart",
             "placement", "labels", "ports", "stop_timeout", "cpu", "memory"]  # fmt: skip
SPECS = st.dictionaries(st.sampled_from(SPEC_KEYS), JSON_VALUES, max_size=6)
ROUTES = [
    ("POST", "/v1/workloads", True),
    ("POST", "/v1/explain", True),
    ("POST", "/v1/workloads/web/scale", True),
    ("POST", "/v1/tokens", True),
    ("POST", "/v1/cluster/join", False),
]


def body_text(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    body=(
        SPECS.map(body_text)
        | JSON_VALUES.map(body_text)
        | st.text(max_size=200).map(str.encode)
        | st.binary(max_size=200)
    ),
)
def test_random_bodies_never_get_a_server_error(
    api: Running, route: tuple[str, str, bool], body: bytes
) -> None:
    method, path, auth = route
    before = api.state()
    a = api.raw(method, path, body, auth=auth, content_type=YAML)
    assert a.status < 500, (a.status, a.body[:300])
    assert a.headers.get("content-type", "").startswith("application/json"), a.headers
    if a.status >= 400:
        assert len(a.body) <= MAX_ERROR_BODY
        ErrorBody.model_validate(a.json())
        assert api.state() == before


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    segment=st.text(min_size=1, max_size=80).filter(lambda s: "/" not in s and "?" not in s),
    query=st.text(max_size=30),
)
def test_random_paths_and_queries_never_get_a_server_error(
    api: Running, segment: str, query: str
) -> None:
    from urllib.parse import quote

    seg, q = quote(segment, safe=""), quote(query, safe="")
    for method, path in (
        ("GET", f"/v1/workloads/{seg}/explain?top={q}"),
        ("DELETE", f"/v1/tokens/{seg}"),
        ("GET", f"/v1/events?tail={q}"),
        ("POST", f"/v1/nodes/{seg}/drain"),
    ):
        a = api.raw(method, path)
        assert a.status < 500, (method, path, a.status, a.body[:300])
        assert a.headers.get("content-type", "").startswith(
            ("application/json", "application/x-ndjson")
        )


MALFORMED_HTTP = [
    ("bad-method", b"GARBAGE\r\n\r\n"),
    ("bad-content-length", b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
    ("header-too-long", b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"),
    (
        "bad-chunk",
        b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ),
    ("control-in-path", b"GET /v1/\x01 HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize("raw", [m[1] for m in MALFORMED_HTTP], ids=[m[0] for m in MALFORMED_HTTP])
def test_malformed_http_gets_the_json_error_object(api: Running, raw: bytes) -> None:
    import socket

    before = api.state()
    with (
        socket.create_connection((api.host, api.port), timeout=10) as sock,
        api.client.ssl.wrap_socket(sock) as tls,
    ):
        tls.sendall(raw)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert b"content-type: application/json" in head.lower()
    assert len(body) <= MAX_ERROR_BODY
    ErrorBody.model_validate(json.loads(body))
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert api.state() == before
