"""Secrets, registry secrets and configs over HTTP (an in-process aiohttp app on the real
routes and a memory store): bad input is refused with the field and never half-applied; a
config's value reads back, a secret's never does; apply's reference checks name each field."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudless.coordinator.userapi.errors import errors
from cloudless.coordinator.userapi.secrets_routes import SecretsApi
from cloudless.lib.clock import FakeClock
from cloudless.lib.errors import ValidationError
from cloudless.model.registry_auth import registry_secret
from cloudless.model.workload import parse_workload
from cloudless.security.secretbox import SecretBox
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore


async def _emit(*a: Any, **k: Any) -> None:
    return None


@pytest.fixture
async def env() -> AsyncIterator[tuple[TestClient[Any, Any], SecretsApi]]:
    clock = FakeClock(0.0)
    api = SecretsApi(
        MemoryStore(clock), SecretBox(lambda g: bytes([g]) * 32), clock, lambda: NO_FENCE, _emit
    )
    app = web.Application(middlewares=[errors])
    api.add_routes(app.router)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, api
    await client.close()


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


REG = "registry"
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/secrets", {"name": "x", "data": b64(b"v"), "type": "weird"},
     "type: 'weird' is not a secret type"),
    ("/v1/secrets", {"name": "x", "data": b64(b"v"), "type": "config"},
     "type: create configs with POST /v1/configs"),
    ("/v1/secrets", {"name": "x", "data": b64(b"hunter2"), "type": REG},
     "data: a registry secret is JSON"),
    ("/v1/secrets", {"name": "x", "type": REG,
                     "data": b64(b'{"auths": {"r:1": {"password": "hunter2"}}}')},
     "data: auths.r:1 needs a username"),
    ("/v1/configs", {"name": "Bad", "data": b64(b"v")}, "name: 'Bad' must be lowercase"),
    ("/v1/configs", {"name": "c", "data": "%%%"}, "data: is not base64"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "why"), BAD)
async def test_bad_input_is_named_and_nothing_stored(
    env: tuple[TestClient[Any, Any], SecretsApi], path: str, body: dict[str, Any], why: str
) -> None:
    client, api = env
    resp = await client.post(path, json=body)
    text = await resp.text()
    assert resp.status == 400 and why in text, text
    assert "hunter2" not in text
    assert list((await api.table.list()).records) == []


async def test_configs_and_secrets_share_names_and_stay_apart(
    env: tuple[TestClient[Any, Any], SecretsApi],
) -> None:
    client, _ = env
    assert (
        await client.post("/v1/configs", json={"name": "conf", "data": b64(b"a=1")})
    ).status == 201
    assert (await client.post("/v1/secrets", json={"name": "pw", "data": b64(b"s3")})).status == 201
    clash = await client.post("/v1/secrets", json={"name": "conf", "data": b64(b"x")})
    assert clash.status == 400 and "'conf' is already a config" in await clash.text()
    got = await (await client.get("/v1/configs/conf")).json()
    assert base64.b64decode(got["data"]) == b"a=1" and got["type"] == "config"
    assert (await client.get("/v1/configs/pw")).status == 404  # a secret is not a config
    secrets = await (await client.get("/v1/secrets")).json()
    assert [s["name"] for s in secrets["secrets"]] == ["pw"]  # configs are not listed
    assert "data" not in json.dumps(secrets)
    assert (await client.delete("/v1/secrets/conf")).status == 404  # nor deleted there
    assert (await client.delete("/v1/configs/conf")).status == 200


async def test_apply_reference_checks(env: tuple[TestClient[Any, Any], SecretsApi]) -> None:
    client, api = env
    for path, body in (
        ("/v1/configs", {"name": "conf", "data": b64(b"a=1")}),
        ("/v1/secrets", {"name": "pw", "data": b64(b"s3")}),
        ("/v1/secrets", {"name": "reg", "type": "registry",
                          "data": b64(registry_secret("ghcr.io", "u", "hunter2"))}),
    ):  # fmt: skip
        assert (await client.post(path, json=body)).status == 201
    spec = parse_workload({
        "name": "web", "image": "reg.example:5000/web:1", "image_pull_secret": "reg",
        "secrets": [{"name": "conf", "path": "/run/a"}, {"name": "nope", "env": "B"}],
        "configs": [{"name": "pw", "path": "/etc/c"}, {"name": "conf", "path": "/etc/d"}],
    })  # fmt: skip
    with pytest.raises(ValidationError) as e:
        await api.check_refs(spec)
    assert e.value.problems == [
        "spec.secrets[0].name: secret 'conf' is a config: list it under configs; create it "
        "with `cloudless secret create conf --from-literal ...`",
        "spec.secrets[1].name: secret 'nope' does not exist; create it with "
        "`cloudless secret create nope --from-literal ...`",
        "spec.configs[0].name: config 'pw' is a secret; create it with "
        "`cloudless config create pw --from-literal ...`",
        "spec.image_pull_secret: secret 'reg' holds credentials for ghcr.io, not for "
        "reg.example:5000 (the registry of spec.image)",
    ]
