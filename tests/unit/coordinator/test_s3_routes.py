"""``/v1/s3/...`` over HTTP (an in-process aiohttp app on the real routes and a memory store):
bad input is refused with the field named and nothing stored; keys are stored sealed and
their secret answered once, under the secrets key's current generation, and re-sealed by a
rotation; deleting a key removes its grants; unknown keys and buckets are 404, taken names
409; the layout is staged, previewed and applied through the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudless.coordinator.userapi.errors import errors
from cloudless.coordinator.userapi.s3_routes import S3Api
from cloudless.coordinator.userapi.secrets_routes import SecretsApi
from cloudless.lib.clock import FakeClock
from cloudless.objectstore.s3.iam import open_key
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore

Env = tuple[TestClient[Any, Any], S3Api]
BOX = SecretBox(lambda g: bytes([g]) * 32)


async def _emit(*a: Any, **k: Any) -> None:
    return None


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock(1000.0)
    store = MemoryStore(clock)
    secrets = SecretsApi(store, BOX, clock, lambda: NO_FENCE, _emit)
    api = S3Api(store, secrets.current_box, clock, _emit)
    app = web.Application(middlewares=[errors])
    api.add_routes(app.router)
    secrets.add_routes(app.router)  # POST /v1/secrets/rotate re-seals access keys too
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, api
    await client.close()


async def _key(client: TestClient[Any, Any], name: str = "alice") -> dict[str, Any]:
    resp = await client.post("/v1/s3/keys", json={"name": name})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


BAD_KEYS: list[tuple[Any, str]] = [
    # (body, what the 400 names)
    ({}, "name: is required"),
    ({"name": ""}, "name: is required"),
    ({"name": 7}, "name: is required"),
    ({"name": "x" * 65}, "must be 1-64 printable"),
    ({"name": "tab\there"}, "must be 1-64 printable"),
    ({"name": "a", "secret": "mine"}, "secret: unknown field"),
    ([1], "body: expected an object"),
    ("not json", "body: is not JSON"),
]


@pytest.mark.parametrize(("body", "why"), BAD_KEYS)
async def test_bad_key_requests_are_named_and_store_nothing(env: Env, body: Any, why: str) -> None:
    client, api = env
    if isinstance(body, str):
        resp = await client.post("/v1/s3/keys", data=body)
    else:
        resp = await client.post("/v1/s3/keys", json=body)
    err = (await resp.json())["error"]
    assert resp.status == 400 and why in err["message"], err
    assert list((await api.keys.list()).records) == []


async def test_a_key_is_stored_sealed_and_its_secret_answered_once(env: Env) -> None:
    client, api = env
    k = await _key(client)
    assert k["key_id"].startswith("CL") and len(k["secret"]) >= 40
    rec = await api.keys.get(k["key_id"])
    assert rec is not None and rec.value.secret == "" and k["secret"] not in rec.value.sealed
    assert open_key(BOX, rec.value).secret == k["secret"]
    listed = await (await client.get("/v1/s3/keys")).json()
    assert listed == {"keys": [{"key_id": k["key_id"], "name": "alice", "created": 1000.0}]}
    assert (await client.delete(f"/v1/s3/keys/{k['key_id']}")).status == 200
    resp = await client.delete(f"/v1/s3/keys/{k['key_id']}")
    assert resp.status == 404 and "cloudless s3 key list" in await resp.text()


def generation(rec: Any) -> int:
    return Sealed.from_dict(json.loads(rec.value.sealed)).generation


async def test_a_rotation_reseals_access_keys(env: Env) -> None:
    client, api = env
    old = await _key(client, "before")
    rotated = await (await client.post("/v1/secrets/rotate", json={})).json()
    assert rotated == {"generation": 2, "resealed": 1}  # no secrets, one access key
    rec = await api.keys.get(old["key_id"])
    assert rec is not None and generation(rec) == 2
    assert open_key(BOX, rec.value).secret == old["secret"]
    new = await _key(client, "after")  # sealed under the current generation
    rec = await api.keys.get(new["key_id"])
    assert rec is not None and generation(rec) == 2
    assert open_key(BOX, rec.value).secret == new["secret"]


BAD_DELETES: list[tuple[str, int, str]] = [
    # (id in the path, status, what the answer names)
    ("CLNOPE", 404, "access key 'CLNOPE' not found: list them with `cloudless s3 key list`"),
    ("bad%20id", 400, "id: 'bad id' is not an access key id"),
    ("CL-1", 400, "id: 'CL-1' is not an access key id"),
    ("C" * 129, 400, "is not an access key id (1-128 letters and digits"),
    ("%C3%A9t%C3%A9", 400, "id: 'été' is not an access key id"),
]


@pytest.mark.parametrize(("key_id", "status", "words"), BAD_DELETES)
async def test_bad_key_deletes_are_named_and_change_nothing(
    env: Env, key_id: str, status: int, words: str
) -> None:
    client, api = env
    k = await _key(client)
    resp = await client.delete(f"/v1/s3/keys/{key_id}")
    err = (await resp.json())["error"]
    assert resp.status == status and words in err["message"], err
    assert [r.name for r in (await api.keys.list()).records] == [k["key_id"]]


async def test_deleting_a_key_removes_its_grants(env: Env) -> None:
    client, _ = env
    alice, bob = (await _key(client, "alice"))["key_id"], (await _key(client, "bob"))["key_id"]
    for name, owner in (("photos", alice), ("docs", alice), ("bobs", bob)):
        resp = await client.post("/v1/s3/buckets", json={"name": name, "owner": owner})
        assert resp.status == 201
    for bucket, key, perm in (("photos", bob, "write"), ("docs", bob, "read")):
        resp = await client.post(f"/v1/s3/buckets/{bucket}/allow", json={"key": key, "perm": perm})
        assert resp.status == 200
    resp = await client.delete(f"/v1/s3/keys/{bob}")
    assert await resp.json() == {"deleted": bob, "revoked": ["bobs", "docs", "photos"]}
    listed = (await (await client.get("/v1/s3/buckets")).json())["buckets"]
    assert {b["name"]: b["allow"] for b in listed} == {
        "bobs": {},  # bob's bucket is left with no key: grant one with `bucket allow`
        "docs": {alice: "owner"},
        "photos": {alice: "owner"},
    }
    resp = await client.post("/v1/s3/buckets/bobs/allow", json={"key": bob})
    assert resp.status == 400 and f"access key {bob!r} does not exist" in await resp.text()


async def test_buckets_permissions_and_refusals(env: Env) -> None:
    client, _ = env
    alice, bob = (await _key(client, "alice"))["key_id"], (await _key(client, "bob"))["key_id"]
    resp = await client.post("/v1/s3/buckets", json={"name": "photos", "owner": alice})
    assert resp.status == 201
    assert (await resp.json())["allow"] == {alice: "owner"}
    resp = await client.post("/v1/s3/buckets/photos/allow", json={"key": bob, "perm": "write"})
    assert resp.status == 200 and (await resp.json())["allow"][bob] == "write"

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        # (path, body, status, words)
        ("/v1/s3/buckets", {"name": "Bad_Name", "owner": alice}, 400, "name: bucket name"),
        ("/v1/s3/buckets", {"name": "ok-name", "owner": "CLNOPE"}, 400,
         "owner: access key 'CLNOPE' does not exist"),
        ("/v1/s3/buckets", {"name": "ok-name"}, 400, "owner: is required"),
        ("/v1/s3/buckets", {"name": "photos", "owner": alice}, 409, "already own"),
        ("/v1/s3/buckets", {"name": "photos", "owner": bob}, 409, "exists; pick another"),
        ("/v1/s3/buckets/photos/allow", {"key": bob, "perm": "god"}, 400,
         "perm: 'god' is not one of read, write, owner"),
        ("/v1/s3/buckets/photos/allow", {"key": "CLNOPE"}, 400, "key: access key 'CLNOPE'"),
        ("/v1/s3/buckets/missing/allow", {"key": bob}, 404, "bucket 'missing' does not exist"),
    ]  # fmt: skip
    for path, body, status, words in cases:
        resp = await client.post(path, json=body)
        err = (await resp.json())["error"]
        assert resp.status == status and words in err["message"], (path, body, err)
    names = [b["name"] for b in (await (await client.get("/v1/s3/buckets")).json())["buckets"]]
    assert names == ["photos"]  # nothing else stored


async def test_layout_through_the_api(env: Env) -> None:
    client, _ = env
    bad: list[tuple[dict[str, Any], str]] = [
        ({"node": "n1"}, "zone: give either zone"),
        ({"node": "n1", "zone": "z", "remove": True}, "zone: give either zone"),
        ({"node": "n1", "zone": "z", "capacity": "lots"}, "capacity:"),
        ({"node": "n1", "remove": "yes"}, "remove: 'yes' is not true or false"),
        ({"node": "n1", "zone": "z", "capacity": "1G", "replication": "3"}, "replication:"),
        ({"zone": "z", "capacity": "1G"}, "node: is required"),
    ]
    for body, words in bad:
        resp = await client.post("/v1/s3/layout/stage", json=body)
        err = (await resp.json())["error"]
        assert resp.status == 400 and words in err["message"], (body, err)
    resp = await client.get("/v1/s3/layout/preview")
    assert resp.status == 400 and "nothing staged" in await resp.text()
    for node, zone in (("n1", "home"), ("n2", "office")):
        body = {"node": node, "zone": zone, "capacity": "1T", "replication": 2}
        assert (await client.post("/v1/s3/layout/stage", json=body)).status == 200
    lines = (await (await client.get("/v1/s3/layout/preview")).json())["lines"]
    # R=2 over two equal nodes: 256 copies each, all new
    assert "512 partition copies move" in lines[0]
    resp = await client.post("/v1/s3/layout/apply", json={"version": -1})
    assert resp.status == 400 and "version: -1" in await resp.text()
    resp = await client.post("/v1/s3/layout/apply", json={"version": 0})
    assert (await resp.json())["lines"][0] == "applied layout version 1"
    resp = await client.post("/v1/s3/layout/apply", json={"version": 1})
    assert resp.status == 400 and "nothing staged" in await resp.text()
    status = (await (await client.get("/v1/s3/status")).json())["lines"]
    assert status[0] == "0 registered object-store nodes" and "layout version 1" in status[1]
