"""Role-based access on the user API: the middleware, users, roles and the audit routes.

``install(app, api)`` adds one aiohttp middleware (innermost, so it runs after the mTLS
``_auth`` middleware has named the caller and sent writes to the leader) and the routes
``/v1/users``, ``/v1/roles`` and ``/v1/audit``. For every authenticated request the
middleware gathers the facts (the caller's user record and role, the namespace of the
workload or replica the route names) and asks ``rbac.decide``; a refusal is ``403`` with
``{"error": {"code": "forbidden", "message": <user, role, verb, resource, namespace>}}``.
Every write, allowed or denied, goes to the audit log with the status it was answered.

Who is who:

* ``spiffe://<td>/user/<name>`` with a record in ``users/<name>``: that record's role;
* ``user/admin`` without a record: the bootstrap admin (``admin`` role). The name is reserved;
* ``service/coordinator-*``: the cluster's own coordinators (``admin``);
* anything else: refused, naming ``cloudless user create``.

Revoking a user deletes its record and revokes its SPIFFE identity in this coordinator's
``RevocationList`` at once (the mTLS check refuses its next request) and in the store (every
other coordinator within its revocation watch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cloudless.coordinator.userapi.app import IDENTITY, Handler, _int_q, _peer_der
from cloudless.coordinator.userapi.errors import ApiError
from cloudless.coordinator.userapi.errors import error_response as _error
from cloudless.coordinator.userapi.errors import json_response as _json
from cloudless.lib.errors import CloudlessError, Conflict, NotFound, ValidationError
from cloudless.lib.ids import is_valid_id
from cloudless.model.workload_codec import load_document
from cloudless.policy.admission_api import AdmissionControl, install_routes
from cloudless.policy.audit import AuditEntry, AuditLog
from cloudless.policy.rbac import (
    ALL_NAMESPACES,
    BUILTIN_ROLES,
    DEFAULT_NAMESPACE,
    AccessRequest,
    Role,
    User,
    decide,
    parse_namespaces,
    parse_role,
    role_to_data,
)
from cloudless.policy.routes import PUBLIC, SELF, UNMAPPED_HINT, NsFrom, RouteAccess, classify
from cloudless.security.errors import PermissionDenied, SecurityError
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.session import RevocationGuard
from cloudless.store.codec import DictCodec
from cloudless.store.errors import StoreError
from cloudless.store.table import Table
from cloudless.store.tables import ROOT
from cloudless.store.tables.revocations import Revocation as StoredRevocation

if TYPE_CHECKING:
    from cloudless.coordinator.userapi.app import UserApi

BOOTSTRAP_ADMIN = "admin"
USER_CACHE_S = 1.0  # a role change reaches this coordinator within this; revocation: at once
MAX_USER_TTL_S = 366 * 24 * 3600
CALLER = web.RequestKey("caller", object)  # User, or why the caller has none


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    namespaces: tuple[str, ...] | None
    created_at: float
    created_by: str
    serial: str
    expires_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "namespaces": list(self.namespaces) if self.namespaces is not None else None,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "serial": self.serial,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserRecord:
        ns = d.get("namespaces")
        return cls(
            str(d["name"]),
            str(d["role"]),
            tuple(ns) if ns is not None else None,
            float(d.get("created_at", 0.0)),
            str(d.get("created_by", "")),
            str(d.get("serial", "")),
            float(d.get("expires_at", 0.0)),
        )


class AccessControl:
    def __init__(self, api: UserApi) -> None:
        self.api = api
        store = api.state.store
        self.users: Table[dict[str, Any]] = Table(store, f"{ROOT}users/", DictCodec("user"))
        self.roles: Table[dict[str, Any]] = Table(store, f"{ROOT}roles/", DictCodec("role"))
        self.audit = AuditLog(store, api.clock)
        self.admission = AdmissionControl(api)
        self._cache: dict[str, tuple[float, UserRecord | None]] = {}

    # ---- who -------------------------------------------------------------------------------

    async def _record(self, name: str) -> UserRecord | None:
        now = self.api.clock.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        rec = await self.users.get(name)
        value = UserRecord.from_dict(rec.value) if rec else None
        self._cache[name] = (now + USER_CACHE_S, value)
        return value

    async def user_of(self, sid: SpiffeId) -> User | str:
        """The caller's binding, or why it has none."""
        if sid.kind is CertKind.SERVICE:
            if sid.name.startswith("coordinator-"):
                return User(sid.uri, "admin")
            return f"{sid} is a service identity with no access to the user API"
        rec = await self._record(sid.name)
        if rec is not None:
            return User(sid.name, rec.role, rec.namespaces)
        if sid.name == BOOTSTRAP_ADMIN:
            return User(sid.name, "admin")
        return (
            f"user {sid.name} has no user record (revoked, or never created): ask an admin "
            f"for `cloudless user create {sid.name} --role ROLE`"
        )

    async def role(self, name: str) -> Role | None:
        if name in BUILTIN_ROLES:
            return BUILTIN_ROLES[name]
        rec = await self.roles.get(name)
        if rec is None:
            return None
        try:
            return parse_role(rec.value)
        except ValidationError:
            return None

    # ---- what ------------------------------------------------------------------------------

    async def _workload_ns(self, name: str | None) -> str | None:
        if not name:
            return None
        with contextlib.suppress(ValueError, CloudlessError):
            rec = await self.api.state.workloads.get(name)
            if rec is not None:
                return rec.value.spec.namespace
        return None

    async def requests_for(self, ra: RouteAccess, request: web.Request) -> list[AccessRequest]:
        name = request.match_info.get("name") or request.match_info.get("id") or ""
        if ra.ns_from is NsFrom.NONE:
            return [AccessRequest(ra.verb, ra.resource, "", name)]
        if ra.ns_from is NsFrom.WORKLOAD:
            ns = await self._workload_ns(name) or DEFAULT_NAMESPACE
            return [AccessRequest(ra.verb, ra.resource, ns, name)]
        if ra.ns_from is NsFrom.REPLICA:
            wl = next(
                (
                    r.value.workload
                    for r in (await self.api.state.replicas.list()).records
                    if r.value.id == name
                ),
                None,
            )
            ns = await self._workload_ns(wl) or ALL_NAMESPACES
            return [AccessRequest(ra.verb, ra.resource, ns, name)]
        if ra.ns_from is NsFrom.QUERY:
            q = request.query.get("namespace") or await self._workload_ns(
                request.query.get("workload")
            )
            return [AccessRequest(ra.verb, ra.resource, q or ALL_NAMESPACES)]
        # BODY: a workload spec. Unparseable bodies are the handler's to refuse (400).
        doc: Any = None
        with contextlib.suppress(CloudlessError):
            doc = load_document(await request.read())
        doc = doc if isinstance(doc, dict) else {}
        raw_ns, raw_name = doc.get("namespace"), doc.get("name")
        ns = raw_ns if isinstance(raw_ns, str) and raw_ns else DEFAULT_NAMESPACE
        wl_name = raw_name if isinstance(raw_name, str) else ""
        if ra.verb != "create":
            return [AccessRequest(ra.verb, ra.resource, ns, wl_name)]
        current = await self._workload_ns(wl_name) if is_valid_id(wl_name) else None
        if current is None:
            return [AccessRequest("create", ra.resource, ns, wl_name)]
        out = [AccessRequest("update", ra.resource, current, wl_name)]
        if ns != current:  # moving it: the new namespace must allow it too
            out.append(AccessRequest("create", ra.resource, ns, wl_name))
        return out

    # ---- the middleware ----------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sid = request.get(IDENTITY)
        if sid is None or request.path in PUBLIC:
            return await handler(request)
        info = request.match_info.route.resource
        pattern = info.canonical if info is not None else request.path
        ra = classify(request.method, pattern)
        user = await self.user_of(sid)
        request[CALLER] = user
        if request.path in SELF:
            return await handler(request)
        if isinstance(user, str):
            await self._audit(request, sid, "", AccessRequest(ra.verb, ra.resource), False, user)
            return _error(403, "forbidden", user)
        role = await self.role(user.role)
        reqs = await self.requests_for(ra, request)
        for req in reqs:
            d = decide(user, role, req)
            if not d.allowed:
                why = d.reason + (f" ({UNMAPPED_HINT})" if req.resource == "*" else "")
                if ra.write:
                    await self._audit(request, sid, user.role, req, False, why, 403)
                return _error(403, "forbidden", why)
        if not ra.write:
            if request.query.get("follow") in ("1", "true", "yes"):
                return await self._guarded(request, handler)
            return await handler(request)
        denied, warnings = await self.admission.check((request.method, pattern), request, user)
        if denied is not None:
            await self._audit(request, sid, user.role, reqs[0], False, denied.message, 403)
            return _error(403, denied.code, denied.message, denied.problems)
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            if warnings:
                text = "; ".join(warnings)[:4000]
                resp.headers["Cloudless-Warning"] = text.encode(
                    "ascii", "backslashreplace"
                ).decode()
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        except ApiError as e:
            status = e.status
            raise
        except CloudlessError as e:
            status = _status_of(e)
            raise
        finally:
            await self._audit(request, sid, user.role, reqs[0], True, "", status)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A followed stream (``events -f``, ``logs -f``) ends the moment the caller's
        certificate is revoked or expires, not at its next request."""
        der = _peer_der(request)
        if der is None:
            return await handler(request)
        try:
            async with RevocationGuard(self.api.revocations, der, clock=self.api.clock):
                return await handler(request)
        except PermissionDenied as e:
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPForbidden(reason=e.code) from None

    async def _audit(
        self,
        request: web.Request,
        sid: SpiffeId,
        role: str,
        req: AccessRequest,
        allowed: bool,
        reason: str,
        status: int = 403,
    ) -> None:
        await self.audit.record(
            AuditEntry(
                at=self.api.clock.now(),
                user=sid.uri,
                role=role,
                verb=req.verb,
                resource=req.resource,
                namespace=req.namespace,
                name=req.name,
                allowed=allowed,
                reason=reason,
                method=request.method,
                path=request.path,
                status=status,
            )
        )

    # ---- /v1/users ---------------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        body = await _body(request)
        problems: list[str] = []
        name = body.get("name")
        if not isinstance(name, str) or not is_valid_id(name):
            problems.append(f"name: {name!r} must be a DNS label (a-z, 0-9, '-')")
        elif name == BOOTSTRAP_ADMIN:
            problems.append("name: 'admin' is the bootstrap admin's and is reserved")
        role_name = body.get("role")
        if not isinstance(role_name, str) or not role_name:
            problems.append("role: required (admin, operator, developer, viewer or a custom one)")
        elif await self.role(role_name) is None:
            known = ", ".join(
                [*BUILTIN_ROLES, *(r.name for r in (await self.roles.list()).records)]
            )
            problems.append(f"role: {role_name!r} does not exist (known: {known})")
        namespaces = parse_namespaces(body.get("namespaces"), "namespaces", problems)
        if namespaces is None and role_name == "developer":
            namespaces = (DEFAULT_NAMESPACE,)
        csr = body.get("csr_pem")
        if not isinstance(csr, str) or "CERTIFICATE REQUEST" not in csr:
            problems.append("csr_pem: required, a PEM certificate signing request")
        ttl = body.get("ttl_seconds")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= MAX_USER_TTL_S
        ):
            problems.append(
                f"ttl_seconds: {ttl!r} must be a whole number in [60, {MAX_USER_TTL_S}]"
            )
        if problems:
            raise ValidationError(problems)
        assert isinstance(name, str) and isinstance(role_name, str) and isinstance(csr, str)
        if await self.users.get(name) is not None:
            raise Conflict(f"user {name} exists: revoke it first (`cloudless user revoke {name}`)")
        ca = self.api.ca
        sid = SpiffeId.user(name, ca.trust_domain)
        try:
            cert = ca.sign_csr(csr.encode(), sid, CertKind.USER, ttl_seconds=ttl)
        except SecurityError as e:
            raise ApiError(400, e.code, f"csr_pem: {e.message}") from None
        from cryptography import x509

        leaf = x509.load_pem_x509_certificate(cert)
        rec = UserRecord(
            name,
            role_name,
            namespaces,
            self.api.clock.now(),
            _caller(request),
            format(leaf.serial_number, "x"),
            leaf.not_valid_after_utc.timestamp(),
        )
        await self.users.create(name, rec.to_dict())
        self._cache.pop(name, None)
        await self.api.recorder.emit("user", f"user {name} created with role {role_name}")
        return _json(
            {
                "user": rec.to_dict(),
                "spiffe_id": sid.uri,
                "cert_pem": cert.decode(),
                "ca_bundle_pem": ca.bundle_pem.decode(),
            },
            status=201,
        )

    async def list_users(self, request: web.Request) -> web.Response:
        recs = (await self.users.list()).records
        return _json({"users": [r.value for r in recs]})

    async def revoke_user(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        rec = await self.users.get(name)
        if rec is None:
            raise NotFound(f"user {name!r} not found: list users with `cloudless user list`")
        me = request[IDENTITY]
        if me.kind is CertKind.USER and me.name == name:
            raise Conflict(f"user {name} may not revoke itself: ask another admin")
        sid = SpiffeId.user(name, self.api.ca.trust_domain)
        now = self.api.clock.now()
        reason = f"user revoked by {_caller(request)}"
        self.api.revocations.revoke_identity(sid, reason=reason, at=now)
        await self.api.state.revocations.put(
            f"user:{name}", StoredRevocation(sid.uri, reason, now, now + MAX_USER_TTL_S)
        )
        await self.users.delete(name)
        self._cache.pop(name, None)
        await self.api.recorder.emit("user", f"user {name} revoked; its certificates are refused")
        return _json({"revoked": name})

    async def whoami(self, request: web.Request) -> web.Response:
        sid: SpiffeId = request[IDENTITY]
        user = request[CALLER]
        doc: dict[str, Any] = {"spiffe_id": sid.uri, "trust_domain": self.api.ca.trust_domain}
        if isinstance(user, User):
            doc.update(user=user.name, role=user.role, namespaces=user.namespaces)
        else:
            doc["refused"] = str(user)
        return _json(doc)

    # ---- /v1/roles ---------------------------------------------------------------------------

    async def apply_role(self, request: web.Request) -> web.Response:
        try:
            data = load_document(await request.read())
        except ValidationError as e:
            raise ValidationError([f"role: {p}" for p in e.problems]) from None
        role = parse_role(data)
        await self.roles.put(role.name, role_to_data(role))
        await self.api.recorder.emit("user", f"role {role.name} applied")
        return _json({"role": role.to_dict()}, status=201)

    async def list_roles(self, request: web.Request) -> web.Response:
        custom = []
        for r in (await self.roles.list()).records:
            with contextlib.suppress(ValidationError):
                custom.append(parse_role(r.value).to_dict())
        return _json({"roles": [r.to_dict() for r in BUILTIN_ROLES.values()] + custom})

    async def delete_role(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in BUILTIN_ROLES:
            raise Conflict(f"role {name} is built in and cannot be deleted")
        if await self.roles.get(name) is None:
            raise NotFound(f"role {name!r} not found: list roles with `cloudless role list`")
        bound = [r.name for r in (await self.users.list()).records if r.value.get("role") == name]
        if bound:
            raise Conflict(f"role {name} is held by {', '.join(bound)}: revoke them first")
        await self.roles.delete(name)
        return _json({"deleted": name})

    # ---- /v1/audit ---------------------------------------------------------------------------

    async def list_audit(self, request: web.Request) -> web.Response:
        return _json({"entries": await self.audit.tail(_int_q(request, "tail", 100))})


def _status_of(e: CloudlessError) -> int:
    known: tuple[tuple[type[CloudlessError], int], ...] = (
        (ValidationError, 400),
        (NotFound, 404),
        (Conflict, 409),
        (StoreError, 503),
    )
    for cls, status in known:
        if isinstance(e, cls):
            return status
    return 400


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ValidationError("body: not JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("body: expected a JSON object")
    return body


def _caller(request: web.Request) -> str:
    sid = request.get(IDENTITY)
    return sid.uri if sid is not None else ""


def install(app: web.Application, api: UserApi) -> AccessControl:
    """Check every authenticated request against the caller's role; audit every write."""
    ac = AccessControl(api)
    app.middlewares.append(ac.middleware)
    r = app.router
    r.add_get("/v1/users/whoami", ac.whoami)
    r.add_post("/v1/users", ac.create_user)
    r.add_get("/v1/users", ac.list_users)
    r.add_delete("/v1/users/{name}", ac.revoke_user)
    r.add_post("/v1/roles", ac.apply_role)
    r.add_get("/v1/roles", ac.list_roles)
    r.add_delete("/v1/roles/{name}", ac.delete_role)
    r.add_get("/v1/audit", ac.list_audit)
    install_routes(app, ac.admission)
    return ac
