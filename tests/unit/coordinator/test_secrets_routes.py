"""Secrets, registry secrets and configs over HTTP (an in-process aiohttp app on the real
routes and a memory store): bad input is refused with the field and never half-applied; a
config's value reads back, a secret's never does; apply's reference checks name each field."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import replace
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
from cloudless.security.secretbox import Sealed, SecretBox
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
    assert list((await api.configs.list()).records) == []


async def test_a_config_and_a_secret_of_one_name_coexist(
    env: tuple[TestClient[Any, Any], SecretsApi],
) -> None:
    client, api = env
    assert (
        await client.post("/v1/configs", json={"name": "app", "data": b64(b"a=1")})
    ).status == 201
    assert (
        await client.post("/v1/secrets", json={"name": "app", "data": b64(b"s3")})
    ).status == 201
    assert (await client.post("/v1/secrets", json={"name": "pw", "data": b64(b"x")})).status == 201
    got = await (await client.get("/v1/configs/app")).json()
    assert base64.b64decode(got["data"]) == b"a=1" and got["type"] == "config"
    assert (await client.get("/v1/configs/pw")).status == 404  # a secret is not a config
    secrets = await (await client.get("/v1/secrets")).json()
    assert [s["name"] for s in secrets["secrets"]] == ["app", "pw"]
    assert "data" not in json.dumps(secrets)
    configs = await (await client.get("/v1/configs")).json()
    assert [c["name"] for c in configs["configs"]] == ["app"]
    # each in its own table, each opening to its own value
    rec = await api.table.get("app")
    assert rec is not None and api.box.open(Sealed.from_dict(rec.value)) == b"s3"
    # deleting one leaves the other
    assert (await client.delete("/v1/configs/app")).status == 200
    assert (await client.delete("/v1/configs/app")).status == 404
    assert [s["name"] for s in (await (await client.get("/v1/secrets")).json())["secrets"]] == [
        "app", "pw"
    ]  # fmt: skip
    assert (await client.delete("/v1/secrets/app")).status == 200


async def legacy_config(api: SecretsApi, name: str, value: bytes) -> None:
    """A config as an earlier version stored it: type config, in the secrets table."""
    sealed = api.box.seal(name, value, now=1.0)
    await api.table.put(name, replace(sealed, type="config").to_dict())


async def test_a_config_left_in_the_secrets_table_is_read_where_it_is_and_moves_on_write(
    env: tuple[TestClient[Any, Any], SecretsApi],
) -> None:
    client, api = env
    await legacy_config(api, "old", b"v=1")
    # read, listed and refused as a secret where it is: nothing moved yet
    got = await (await client.get("/v1/configs/old")).json()
    assert base64.b64decode(got["data"]) == b"v=1" and got["version"] == 1
    assert [c["name"] for c in (await (await client.get("/v1/configs")).json())["configs"]] == [
        "old"
    ]  # fmt: skip
    assert (await (await client.get("/v1/secrets")).json())["secrets"] == []
    assert (await client.delete("/v1/secrets/old")).status == 404
    assert await api.configs.get("old") is None
    # a secret of its name: the config moves to its own table first, then both exist
    made = await client.post("/v1/secrets", json={"name": "old", "data": b64(b"s")})
    assert made.status == 201
    moved = await api.configs.get("old")
    assert moved is not None and api.box.open(Sealed.from_dict(moved.value)) == b"v=1"
    got = await (await client.get("/v1/configs/old")).json()
    assert base64.b64decode(got["data"]) == b"v=1"
    # a config write on a left-over one continues its version
    await legacy_config(api, "older", b"v=1")
    resp = await client.post("/v1/configs", json={"name": "older", "data": b64(b"v=2")})
    assert (resp.status, (await resp.json())["version"]) == (200, 2)
    assert await api.table.get("older") is None
    # deleting a left-over config deletes it where it is
    await legacy_config(api, "gone", b"x")
    assert (await client.delete("/v1/configs/gone")).status == 200
    assert await api.table.get("gone") is None and await api.configs.get("gone") is None
    # key rotation re-seals both tables
    await legacy_config(api, "left", b"l")
    rotated = await (await client.post("/v1/secrets/rotate", json={})).json()
    # secrets table: old (the secret), left (a left-over config); configs table: old, older
    assert rotated == {"generation": 2, "resealed": 4}
    for name in ("old", "left"):
        rec = await api.table.get(name)
        assert rec is not None and Sealed.from_dict(rec.value).generation == 2


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
        "spec.secrets[0].name: secret 'conf' does not exist (there is a config of that name: "
        "refer to it under configs); create it with "
        "`cloudless secret create conf --from-literal ...`",
        "spec.secrets[1].name: secret 'nope' does not exist; create it with "
        "`cloudless secret create nope --from-literal ...`",
        "spec.configs[0].name: config 'pw' does not exist (there is a secret of that name: "
        "refer to it under secrets); create it with "
        "`cloudless config create pw --from-literal ...`",
        "spec.image_pull_secret: secret 'reg' holds credentials for ghcr.io, not for "
        "reg.example:5000 (the registry of spec.image)",
    ]
