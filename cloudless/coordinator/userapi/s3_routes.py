"""``/v1/s3/...``: the object store's access keys, buckets and layout (``cloudless s3``).

Every route is role-checked like the rest of the API (resources ``s3keys``, ``s3buckets``,
``s3layout`` in ``policy.routes``), so a user without etcd credentials manages the store
from anywhere the API reaches. The work is ``objectstore.admin``'s; this module parses and
checks bodies (``400`` naming every bad field, nothing stored) and maps refusals to statuses:
an unknown key or bucket is ``404``, a name taken or a layout that moved on ``409``.

* ``POST /v1/s3/keys`` ``{"name"}``: a new access key; the answer is the only place its
  secret appears (the store holds it sealed, ``s3.iam.seal_key``, under the secrets key's
  current generation). ``GET`` lists keys without secrets; ``DELETE /v1/s3/keys/{id}``
  removes one and its grants in every bucket (answering the buckets that lost one).
* ``POST /v1/s3/buckets`` ``{"name", "owner"}``; ``GET`` lists buckets with who may use them;
  ``POST /v1/s3/buckets/{name}/allow`` ``{"key", "perm"}`` grants read, write or owner.
* ``GET /v1/s3/layout``, ``POST /v1/s3/layout/stage`` ``{"node", "zone"?, "capacity"?,
  "remove"?, "replication"?}``, ``GET /v1/s3/layout/preview``, ``POST /v1/s3/layout/apply``
  ``{"version"}``; ``GET /v1/s3/status``: registered nodes and the layout. These answer
  ``{"lines": [...]}``, the text the CLI prints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudless.coordinator.userapi.errors import json_response
from cloudless.lib.bounded import show
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, Conflict, NotFound, ValidationError
from cloudless.model.resources import parse_size
from cloudless.objectstore import admin
from cloudless.objectstore.layout_store import LayoutStore
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.iam import BUCKETS, KEYS, PERMS
from cloudless.objectstore.s3.names import check_bucket
from cloudless.security.secretbox import SecretBox
from cloudless.store.protocol import Store

Emit = Callable[[str, str], Awaitable[Any]]
_NOT_FOUND = ("NoSuchBucket", "NoSuchKey")
_TAKEN = ("BucketAlreadyExists", "BucketAlreadyOwnedByYou")


def _refusal(e: CloudlessError) -> CloudlessError:
    """An ``admin`` refusal as the API error that fits its code."""
    if e.code in _NOT_FOUND:
        return NotFound(e.message)
    if e.code in _TAKEN:
        return Conflict(e.message)
    if isinstance(e, (Conflict, NotFound, ValidationError)):
        return e
    return ValidationError(e.message)


async def _body(request: web.Request, fields: str) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValidationError(f"body: is not JSON (expected {fields})") from None
    if not isinstance(body, dict):
        raise ValidationError(f"body: expected an object {fields}, got {show(body)}")
    return body


def _text(body: dict[str, Any], name: str, problems: list[str], *, limit: int = 64) -> str:
    v = body.get(name)
    if not isinstance(v, str) or not v:
        problems.append(f"{name}: is required (a string)")
        return ""
    if len(v) > limit or not v.isprintable():
        problems.append(f"{name}: {show(v)} must be 1-{limit} printable characters")
    return v


def _unknown(body: dict[str, Any], allowed: tuple[str, ...], problems: list[str]) -> None:
    for k in sorted(set(body) - set(allowed)):
        problems.append(f"{k}: unknown field (expected {', '.join(allowed)})")


class S3Api:
    def __init__(
        self, store: Store, box: Callable[[], Awaitable[SecretBox]], clock: Clock, emit: Emit
    ) -> None:
        """``box``: the secret box sealing under the current generation (``SecretsApi``)."""
        self.store = store
        self.box = box
        self.clock = clock
        self.emit = emit
        self.keys = KEYS.bind(store)
        self.buckets = BUCKETS.bind(store)

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/s3/keys", self.create_key)
        r.add_get("/v1/s3/keys", self.list_keys)
        r.add_delete("/v1/s3/keys/{id}", self.delete_key)
        r.add_post("/v1/s3/buckets", self.create_bucket)
        r.add_get("/v1/s3/buckets", self.list_buckets)
        r.add_post("/v1/s3/buckets/{name}/allow", self.allow)
        r.add_get("/v1/s3/layout", self.layout)
        r.add_post("/v1/s3/layout/stage", self.stage)
        r.add_get("/v1/s3/layout/preview", self.preview)
        r.add_post("/v1/s3/layout/apply", self.apply)
        r.add_get("/v1/s3/status", self.status)

    # ---- keys ------------------------------------------------------------------------------

    async def create_key(self, request: web.Request) -> web.Response:
        body = await _body(request, '{"name": ...}')
        problems: list[str] = []
        name = _text(body, "name", problems)
        _unknown(body, ("name",), problems)
        if problems:
            raise ValidationError(problems)
        key = await admin.create_key(self.store, self.clock, name, await self.box())
        await self.emit("s3", f"access key {key.key_id} created for {name}")
        return json_response({**key.public(), "secret": key.secret}, status=201)

    async def list_keys(self, request: web.Request) -> web.Response:
        rows = (await self.keys.list()).records
        return json_response({"keys": [r.value.public() for r in rows]})

    async def delete_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        revoked = await admin.delete_key(self.store, self.clock, key_id)
        grants = f"; its grants on {', '.join(revoked)} removed" if revoked else ""
        await self.emit("s3", f"access key {key_id} deleted{grants}")
        return json_response({"deleted": key_id, "revoked": revoked})

    # ---- buckets ---------------------------------------------------------------------------

    async def create_bucket(self, request: web.Request) -> web.Response:
        body = await _body(request, '{"name": ..., "owner": <access key id>}')
        problems: list[str] = []
        name = _text(body, "name", problems)
        owner = _text(body, "owner", problems, limit=128)
        _unknown(body, ("name", "owner"), problems)
        if name:
            try:
                check_bucket(name)
            except S3Error as e:
                problems.append(f"name: {e.message}")
        if owner and await self.keys.get(owner) is None:
            problems.append(f"owner: access key {owner!r} does not exist: create it first")
        if problems:
            raise ValidationError(problems)
        try:
            b = await admin.create_bucket(self.store, self.clock, name, owner)
        except CloudlessError as e:
            raise _refusal(e) from None
        await self.emit("s3", f"bucket {name} created, owner {owner}")
        return json_response(_bucket(b), status=201)

    async def list_buckets(self, request: web.Request) -> web.Response:
        rows = (await self.buckets.list()).records
        return json_response({"buckets": [_bucket(r.value) for r in rows]})

    async def allow(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request, '{"key": <access key id>, "perm": "read|write|owner"}')
        problems: list[str] = []
        key = _text(body, "key", problems, limit=128)
        perm = body.get("perm", "read")
        if perm not in PERMS:
            problems.append(f"perm: {show(perm)} is not one of {', '.join(PERMS)}")
        _unknown(body, ("key", "perm"), problems)
        if key and await self.keys.get(key) is None:
            problems.append(f"key: access key {key!r} does not exist")
        if problems:
            raise ValidationError(problems)
        try:
            b = await admin.allow(self.store, self.clock, name, key, str(perm))
        except CloudlessError as e:
            raise _refusal(e) from None
        await self.emit("s3", f"access key {key} may {perm} on bucket {name}")
        return json_response(_bucket(b))

    # ---- layout ----------------------------------------------------------------------------

    async def layout(self, request: web.Request) -> web.Response:
        return json_response({"lines": admin.render_history(await LayoutStore(self.store).show())})

    async def stage(self, request: web.Request) -> web.Response:
        fields = ("node", "zone", "capacity", "remove", "replication")
        body = await _body(request, '{"node", "zone", "capacity"} or {"node", "remove": true}')
        problems: list[str] = []
        node = _text(body, "node", problems, limit=253)
        zone, remove = body.get("zone"), body.get("remove", False)
        replication = body.get("replication")
        _unknown(body, fields, problems)
        if not isinstance(remove, bool):
            problems.append(f"remove: {show(remove)} is not true or false")
        elif remove == (zone is not None):
            problems.append("zone: give either zone (with capacity) or remove: true")
        if zone is not None and (not isinstance(zone, str) or not zone or len(zone) > 64):
            problems.append(f"zone: {show(zone)} must be 1-64 characters")
        capacity = None
        cap = body.get("capacity")
        if cap is not None:
            try:
                capacity = parse_size(cap if isinstance(cap, str) else str(cap))
            except (ValueError, TypeError) as e:
                problems.append(f"capacity: {e}")
        if replication is not None and (
            isinstance(replication, bool) or not isinstance(replication, int)
        ):
            problems.append(f"replication: {show(replication)} is not an integer")
        if problems:
            raise ValidationError(problems)
        try:
            if replication is not None:
                await LayoutStore(self.store).stage_replication(replication)
            lines = await admin.stage(self.store, node, zone, capacity)
        except CloudlessError as e:
            raise _refusal(e) from None
        return json_response({"lines": lines})

    async def preview(self, request: web.Request) -> web.Response:
        try:
            plan = await LayoutStore(self.store).preview()
        except CloudlessError as e:
            raise _refusal(e) from None
        return json_response({"lines": admin.render_plan(plan)})

    async def apply(self, request: web.Request) -> web.Response:
        body = await _body(request, '{"version": <the version you previewed against>}')
        problems: list[str] = []
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            problems.append(f"version: {show(version)} is not a layout version (an integer >= 0)")
        _unknown(body, ("version",), problems)
        if problems:
            raise ValidationError(problems)
        assert isinstance(version, int)
        try:
            lines = await admin.apply(self.store, version)
        except CloudlessError as e:
            raise _refusal(e) from None
        await self.emit("s3", lines[0])
        return json_response({"lines": lines})

    async def status(self, request: web.Request) -> web.Response:
        return json_response({"lines": await admin.status(self.store)})


def _bucket(b: Any) -> dict[str, Any]:
    from cloudless.objectstore import lifecycle
    from cloudless.objectstore.s3 import cors

    return {
        "name": b.name,
        "owner": b.owner,
        "created": b.created,
        "allow": dict(b.allow),
        "public_read": b.public_read,
        "lifecycle_rules": len(lifecycle.decode(b.lifecycle)),
        "cors_rules": len(cors.decode(b.cors)),
    }
