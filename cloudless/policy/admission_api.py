"""Admission at the user API: policies in the store, compiled once per version, checked on
every workload write (apply and scale) after the caller's role allowed it.

Policies live in ``/cloudless/policies/<name>`` as the document the user applied. Each
coordinator compiles a policy the first time it sees a version of it (by the record's mod
revision) and keeps the compiled form until the record changes; the list is re-read at most
once a second, and at once after a policy write through this coordinator (every write goes
through the leader). A refusal is
``403 {"error": {"code": "policy_denied", "message": ..., "problems": [one per policy]}}``;
a dry-run policy's would-be refusal is answered in the ``Cloudless-Warning`` header and
recorded as a ``policy`` event.

``POST /v1/policies`` compiles the policy (``400`` naming each expression that does not
compile, nothing stored) and reports which existing workloads it would deny;
``?dry_run=true`` reports without storing.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cloudless.coordinator.userapi.errors import ApiError
from cloudless.coordinator.userapi.errors import json_response as _json
from cloudless.lib.errors import CloudlessError, NotFound, ValidationError
from cloudless.model.workload_codec import load_document, parse_workload_data, workload_to_dict
from cloudless.policy.admission import Policy, Verdict, admit, parse_policy, request_variables
from cloudless.policy.rbac import User
from cloudless.store.codec import DictCodec
from cloudless.store.table import Table
from cloudless.store.tables import ROOT

if TYPE_CHECKING:
    from cloudless.coordinator.userapi.app import UserApi

log = logging.getLogger("cloudless.policy")

APPLY = ("POST", "/v1/workloads")
SCALE = ("POST", "/v1/workloads/{name}/scale")
LIST_EVERY_S = 1.0


def user_variables(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "namespaces": list(user.namespaces) if user.namespaces is not None else ["*"],
    }


class AdmissionControl:
    def __init__(self, api: UserApi) -> None:
        self.api = api
        self.table: Table[dict[str, Any]] = Table(
            api.state.store, f"{ROOT}policies/", DictCodec("policy")
        )
        self._compiled: dict[str, tuple[int, Policy]] = {}
        self._listed: tuple[float, list[Policy]] | None = None

    async def policies(self) -> list[Policy]:
        """The stored policies, compiled; listed at most once per ``LIST_EVERY_S`` (writes
        go through the leader, whose own policy writes drop this at once)."""
        now = self.api.clock.monotonic()
        if self._listed is not None and now - self._listed[0] < LIST_EVERY_S:
            return self._listed[1]
        listing = await self.table.list()
        out: list[Policy] = []
        seen: dict[str, tuple[int, Policy]] = {}
        for rec in listing.records:
            hit = self._compiled.get(rec.name)
            if hit is None or hit[0] != rec.mod_revision:
                try:
                    hit = (rec.mod_revision, parse_policy(rec.value))
                except ValidationError as e:  # stored by a newer version? refuse loudly
                    log.error("stored policy %s does not compile here: %s", rec.name, e)
                    continue
            seen[rec.name] = hit
            out.append(hit[1])
        self._compiled = seen
        self._listed = (now, out)
        return out

    async def _variables(self, key: tuple[str, str], request: web.Request, user: User) -> Any:
        """The request's CEL variables, or None when the handler will refuse it as bad input
        (it answers 400 with the details)."""
        uvars = user_variables(user)
        if key == APPLY:
            try:
                spec = parse_workload_data(load_document(await request.read()))
            except CloudlessError:
                return None
            cur = await self.api.state.workloads.get(spec.name)
            old = workload_to_dict(cur.value.spec) if cur and not cur.value.deleted else None
            verb = "update" if old else "create"
            return request_variables(workload_to_dict(spec), uvars, old=old, verb=verb)
        try:
            n = (await request.json())["replicas"]
        except (ValueError, KeyError, TypeError):
            return None
        cur = await self.api.state.workloads.get(request.match_info["name"])
        if cur is None or isinstance(n, bool) or not isinstance(n, int):
            return None
        old_spec = cur.value.spec
        new = workload_to_dict(replace(old_spec, replicas=n))
        return request_variables(new, uvars, old=workload_to_dict(old_spec), verb="update")

    async def check(
        self, key: tuple[str, str], request: web.Request, user: User
    ) -> tuple[ApiError | None, list[str]]:
        """(the 403 to answer if a policy denies, the dry-run warnings)."""
        if key not in (APPLY, SCALE):
            return None, []
        policies = await self.policies()
        if not policies:
            return None, []
        variables = await self._variables(key, request, user)
        if variables is None:
            return None, []
        verdict = admit(policies, variables)
        warnings = [w.describe() for w in verdict.warnings]
        name = variables["object"]["name"]
        for w in warnings:
            await self.api.recorder.emit("policy", f"workload {name} would be denied: {w}")
        if verdict.allowed:
            return None, warnings
        problems = [d.describe() for d in verdict.denials]
        why = f"workload {name}: {verdict.message()}"
        return ApiError(403, "policy_denied", why, problems), []

    # ---- /v1/policies ------------------------------------------------------------------------

    async def apply_policy(self, request: web.Request) -> web.Response:
        try:
            data = load_document(await request.read())
        except ValidationError as e:
            raise ValidationError([f"policy: {p}" for p in e.problems]) from None
        policy = parse_policy(data)
        dry_run = request.query.get("dry_run") in ("1", "true", "yes")
        would = await self.would_deny(policy, request)
        if not dry_run:
            await self.table.put(policy.name, policy.to_dict())
            self._listed = None
            await self.api.recorder.emit("policy", f"policy {policy.name} applied ({policy.mode})")
        return _json(
            {"policy": policy.to_dict(), "dry_run": dry_run, "would_deny": would},
            status=200 if dry_run else 201,
        )

    async def would_deny(self, policy: Policy, request: web.Request) -> list[dict[str, Any]]:
        """Every stored workload this policy would refuse, were it applied again now (the
        caller stands in as the user)."""
        from cloudless.policy.access import CALLER

        caller = request.get(CALLER)
        uvars = user_variables(caller) if isinstance(caller, User) else {}
        enforcing = replace(policy, mode=policy.mode.ENFORCE)
        out: list[dict[str, Any]] = []
        for rec in (await self.api.state.workloads.list()).records:
            if rec.value.deleted:
                continue
            obj = workload_to_dict(rec.value.spec)
            v: Verdict = admit([enforcing], request_variables(obj, uvars, old=obj, verb="update"))
            out += [
                {"workload": rec.name, "namespace": rec.value.spec.namespace, "why": d.describe()}
                for d in v.denials
            ]
        return out

    async def list_policies(self, request: web.Request) -> web.Response:
        return _json({"policies": [p.to_dict() for p in await self.policies()]})

    async def delete_policy(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with contextlib.suppress(ValueError):
            if await self.table.delete(name):
                self._listed = None
                await self.api.recorder.emit("policy", f"policy {name} deleted")
                return _json({"deleted": name})
        raise NotFound(f"policy {name!r} not found: list them with `cloudless policy list`")


def install_routes(app: web.Application, adm: AdmissionControl) -> None:
    r = app.router
    r.add_post("/v1/policies", adm.apply_policy)
    r.add_get("/v1/policies", adm.list_policies)
    r.add_delete("/v1/policies/{name}", adm.delete_policy)
