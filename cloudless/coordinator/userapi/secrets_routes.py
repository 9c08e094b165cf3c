"""The user API for secrets: create or update, list (metadata only), delete, rotate the key.

``POST /v1/secrets`` ``{"name", "data": <base64>, "type"?}`` seals the value
(``security.secretbox``) and stores it; an existing secret gets version + 1.
``GET /v1/secrets`` shows name, type, size, version, generation and times, never a value, and
no call returns one. ``POST /v1/secrets/rotate`` moves to the next key generation and re-seals
every secret, config and object-store access key (``s3.iam.reseal_keys``; one that does not
open is left as it was and named in the answer's ``not_resealed``). Events name secrets,
never values.

Configs (``/v1/configs``, like Swarm configs or ConfigMaps) are sealed records of type
``config`` in a table of their own (``configs/``), so a config and a secret may share a name.
They share the secrets' sealing, key rotation and delivery, but ``GET /v1/configs/{name}``
returns the value, and replicas get them as files of mode 0444 (``spec.configs``). A config
written before configs had their own table is a record of type ``config`` in ``secrets/``: the
config routes read, list and delete it there, the secret routes do not see it, and the next
write under its name (of a config or a secret) first moves it to ``configs/`` in one
transaction, as it is (no migration step; ``_move_legacy``).

A ``registry`` secret (``type: registry``) holds image-pull credentials in docker config.json
shape (``model.registry_auth``); its value is checked before it is sealed, and a secret keeps
its type across updates.

``check_refs(spec)`` is what ``apply`` calls: a workload referring to a secret that does not
exist is refused with the field path of every such reference; its ``image_pull_secret`` must be a
registry secret holding credentials for the image's registry.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, NotFound, ValidationError
from cloudless.lib.ids import is_valid_id
from cloudless.model.registry_auth import (
    CONFIG_TYPE,
    REGISTRY,
    SECRET_TYPES,
    normalize_host,
    parse_registry_secret,
)
from cloudless.model.workload import WorkloadSpec
from cloudless.objectstore.s3.iam import reseal_keys
from cloudless.runtime.oci.reference import parse_reference
from cloudless.security.secretbox import Sealed, SecretBox
from cloudless.store.fence import Fence, fenced_txn
from cloudless.store.protocol import Store
from cloudless.store.table import Record, Table
from cloudless.store.tables.config import CONFIG
from cloudless.store.tables.secrets import CONFIGS, GENERATION, SECRETS
from cloudless.store.types import TxnOp

Emit = Callable[..., Awaitable[None]]


class SecretsApi:
    def __init__(
        self, store: Store, box: SecretBox, clock: Clock, fence: Callable[[], Fence], emit: Emit
    ) -> None:
        self.store = store
        self.table: Table[dict[str, Any]] = SECRETS.bind(store)
        self.configs: Table[dict[str, Any]] = CONFIGS.bind(store)
        self.config: Table[dict[str, Any]] = CONFIG.bind(store)
        self.box = box
        self.clock = clock
        self.fence = fence
        self.emit = emit

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/secrets", self.put)
        r.add_get("/v1/secrets", self.list)
        r.add_post("/v1/secrets/rotate", self.rotate)
        r.add_delete("/v1/secrets/{name}", self.delete)
        r.add_post("/v1/configs", self.put_config)
        r.add_get("/v1/configs", self.list_configs)
        r.add_get("/v1/configs/{name}", self.get_config)
        r.add_delete("/v1/configs/{name}", self.delete_config)

    async def generation(self) -> int:
        rec = await self.config.get(GENERATION)
        return int(rec.value.get("generation", 1)) if rec else 1

    async def _box(self, generation: int | None = None) -> SecretBox:
        """A box sealing under ``generation`` (default: the store's current one)."""
        return SecretBox(self.box.key_for, generation or await self.generation())

    async def current_box(self) -> SecretBox:
        """A box sealing under the store's current generation (access keys use it too)."""
        return await self._box()

    async def put(self, request: web.Request) -> web.Response:
        return await self._put(request, config=False)

    async def put_config(self, request: web.Request) -> web.Response:
        return await self._put(request, config=True)

    async def _put(self, request: web.Request, *, config: bool) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise ValidationError('body: is not JSON ({"name": ..., "data": <base64>})') from None
        if not isinstance(body, dict):
            raise ValidationError("body: expected an object with name and data")
        name, data = body.get("name"), body.get("data")
        kind = CONFIG_TYPE if config else body.get("type", "opaque")
        problems = []
        if kind == CONFIG_TYPE and not config:
            problems.append("type: create configs with POST /v1/configs (cloudless config create)")
        elif kind not in SECRET_TYPES:
            problems.append(f"type: {kind!r} is not a secret type ({', '.join(SECRET_TYPES)})")
        if not isinstance(name, str) or not is_valid_id(name):
            problems.append(f'name: {name!r} must be lowercase letters, digits and "-", 1-63 long')
        value = b""
        try:
            value = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
        except (binascii.Error, ValueError):
            problems.append("data: is not base64")
        if not isinstance(data, str):
            problems.append("data: is required (the value, base64-encoded)")
        if not problems and kind == REGISTRY:
            parse_registry_secret(value)  # raises naming the field, never the password
        if problems:
            raise ValidationError(problems)
        assert isinstance(name, str)
        now = self.clock.now()
        sealed = (await self._box()).seal(
            name, value, now=now
        )  # refuses values over the size limit
        await self._move_legacy(name)
        versions: list[int] = []

        def change(cur: dict[str, Any] | None) -> dict[str, Any]:
            old = Sealed.from_dict(cur) if cur else None
            if old is not None and old.type != kind:
                raise ValidationError(
                    f"type: {name!r} is a {old.type} secret; a secret keeps its type, so "
                    f"delete it first or pick another name"
                )
            version = old.version + 1 if old else 1
            versions[:] = [version]
            created = old.created_at if old else now
            return Sealed(
                name, sealed.generation, sealed.nonce, sealed.ciphertext, len(value), version,
                created, now, str(kind),
            ).to_dict()  # fmt: skip

        await self._table(config).update(name, change, fence=self.fence())
        what = "created" if versions[0] == 1 else f"updated (version {versions[0]})"
        noun = "config" if config else "secret"
        await self.emit("secret", f"{noun} {name} {what}, {len(value)} bytes")
        status = 201 if versions[0] == 1 else 200
        return web.json_response(
            {"name": name, "version": versions[0], "size": len(value)}, status=status
        )

    def _table(self, config: bool) -> Table[dict[str, Any]]:
        return self.configs if config else self.table

    async def _move_legacy(self, name: str) -> None:
        """A config left in the secrets table under ``name`` moves to the configs table, as it
        is (its sealing is bound to its name, not its table), in one transaction: the configs'
        copy wins if there is one. Concurrent moves: one succeeds, the other finds nothing."""
        rec = await self.table.get(name)
        if rec is None or Sealed.from_dict(rec.value).type != CONFIG_TYPE:
            return
        mine = await self.configs.get(name)
        compares = [self.table.unchanged(name, rec.mod_revision)]
        ops: list[TxnOp] = [self.table.delete_op(name)]
        if mine is None:
            compares.append(self.configs.unchanged(name, 0))
            ops.append(self.configs.put_op(name, rec.value))
        await fenced_txn(self.store, self.fence(), compares, ops)

    async def _rows(self, config: bool) -> list[Sealed]:
        """Secrets (not the configs left in their table), or configs (both tables')."""
        rows = [Sealed.from_dict(r.value) for r in (await self.table.list()).records]
        if not config:
            return [s for s in rows if s.type != CONFIG_TYPE]
        own = {r.name: Sealed.from_dict(r.value) for r in (await self.configs.list()).records}
        legacy = {s.name: s for s in rows if s.type == CONFIG_TYPE and s.name not in own}
        return [v for _, v in sorted({**own, **legacy}.items())]

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"secrets": [s.metadata() for s in await self._rows(False)]})

    async def list_configs(self, request: web.Request) -> web.Response:
        return web.json_response({"configs": [s.metadata() for s in await self._rows(True)]})

    async def _find(self, name: str, config: bool) -> Sealed | None:
        """The secret or config ``name`` (a config from its table, else one left in the
        secrets table), or None."""
        rec: Record[dict[str, Any]] | None = await self.configs.get(name) if config else None
        if rec is not None:
            return Sealed.from_dict(rec.value)
        rec = await self.table.get(name)
        sealed = Sealed.from_dict(rec.value) if rec is not None else None
        if sealed is None or (sealed.type == CONFIG_TYPE) != config:
            return None
        return sealed

    async def _get(self, name: str, config: bool) -> Sealed:
        found = await self._find(name, config)
        if found is None:
            noun = "config" if config else "secret"
            raise NotFound(f"{noun} {name!r} not found: list them with `cloudless {noun} list`")
        return found

    async def get_config(self, request: web.Request) -> web.Response:
        sealed = await self._get(request.match_info["name"], True)
        value = self.box.open(sealed)
        return web.json_response({**sealed.metadata(), "data": base64.b64encode(value).decode()})

    async def delete(self, request: web.Request) -> web.Response:
        return await self._delete(request.match_info["name"], config=False)

    async def delete_config(self, request: web.Request) -> web.Response:
        return await self._delete(request.match_info["name"], config=True)

    async def _delete(self, name: str, *, config: bool) -> web.Response:
        await self._get(name, config)
        if config:
            await self.configs.delete(name, fence=self.fence())
            await self._move_legacy(name)  # a leftover of the same name goes too:
            await self.configs.delete(name, fence=self.fence())  # moved, then deleted
        else:
            await self.table.delete(name, fence=self.fence())
        await self.emit("secret", f"{'config' if config else 'secret'} {name} deleted")
        return web.json_response({"deleted": name})

    async def rotate(self, request: web.Request) -> web.Response:
        gen = await self.generation() + 1
        box = await self._box(gen)
        now = self.clock.now()

        def reseal(cur: dict[str, Any] | None) -> dict[str, Any] | None:
            return box.reseal(Sealed.from_dict(cur), now).to_dict() if cur else None

        n = 0
        for table in (self.table, self.configs):
            for rec in (await table.list()).records:
                await table.update(rec.name, reseal, fence=self.fence())
                n += 1
        keys, skipped = await reseal_keys(self.store, box, fence=self.fence())
        n += keys
        await self.config.put(GENERATION, {"generation": gen}, fence=self.fence())
        await self.emit("secret", f"secrets key rotated to generation {gen}; {n} re-sealed")
        body: dict[str, Any] = {"generation": gen, "resealed": n}
        if skipped:
            body["not_resealed"] = skipped
        return web.json_response(body)

    async def check_refs(self, spec: WorkloadSpec) -> None:
        missing = []
        kinds = (("secrets", spec.secrets, False), ("configs", spec.configs, True))
        for field, refs, config in kinds:
            noun, other = ("config", "secret") if config else ("secret", "config")
            for i, ref in enumerate(refs):
                if await self._find(ref.name, config) is not None:
                    continue
                hint = ""
                if await self._find(ref.name, not config) is not None:
                    hint = f" (there is a {other} of that name: refer to it under {other}s)"
                missing.append(
                    f"spec.{field}[{i}].name: {noun} {ref.name!r} does not exist{hint}; create "
                    f"it with `cloudless {noun} create {ref.name} --from-literal ...`"
                )
        if spec.image_pull_secret:
            why = await self._pull_secret_problem(spec.image_pull_secret, spec.image)
            if why:
                missing.append(f"spec.image_pull_secret: {why}")
        if missing:
            raise ValidationError(missing)

    async def _pull_secret_problem(self, name: str, image: str) -> str | None:
        rec = await self.table.get(name)
        host = parse_reference(image).host
        fix = f"cloudless secret create {name} --type registry --registry {host} --username ..."
        if rec is None:
            return f"secret {name!r} does not exist; create it with `{fix}`"
        sealed = Sealed.from_dict(rec.value)
        if sealed.type != REGISTRY:
            return f"secret {name!r} is a {sealed.type} secret, not a registry one (`{fix}`)"
        try:
            hosts = parse_registry_secret(self.box.open(sealed))
        except (CloudlessError, ValueError):
            return f"secret {name!r} cannot be opened or read; create it again (`{fix}`)"
        if normalize_host(host) not in hosts:
            return (
                f"secret {name!r} holds credentials for {', '.join(sorted(hosts))}, not for "
                f"{host} (the registry of spec.image)"
            )
        return None
