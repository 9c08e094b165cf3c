"""The user-facing HTTPS/JSON API (aiohttp), authenticated by client certificate.

Every coordinator serves it. Reads are answered locally from the store; every mutating call
on a follower is answered ``307 Temporary Redirect`` to the same path on the leader. Errors
are JSON ``{"error": {"code", "message", "problems"?}}`` with a status that fits: 400 invalid
input, 401 no or bad certificate, 403 not allowed, 404 unknown, 409 conflict, 503 no leader.

``/v1/ca`` and ``/healthz`` need no certificate: a joining node fetches the CA bundle there
and checks it against the digest in its token before it trusts anything.
"""

from __future__ import annotations

import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web
from cryptography import x509

from cloudless.coordinator.hub import AgentHub, NotLeader
from cloudless.coordinator.records import WorkloadRecord
from cloudless.coordinator.rollout_api import RolloutApi
from cloudless.coordinator.secrets_api import SecretsApi
from cloudless.coordinator.state import ClusterState
from cloudless.coordinator.volume_listing import volume_rows
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, Conflict, NotFound, ValidationError
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import Replica
from cloudless.model.workload import WorkloadSpec
from cloudless.model.workload_codec import load_document, parse_workload_data, workload_to_dict
from cloudless.scheduler.scheduler import Scheduler
from cloudless.scheduler.snapshot import NodeColumns, Snapshot
from cloudless.security.authz import Authorizer
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.secretbox import SecretBox
from cloudless.security.tokens import TokenManager, TokenUse
from cloudless.store.errors import DecodeError, Fenced, StoreError
from cloudless.store.table import Table
from cloudless.store.tables.revocations import Revocation as StoredRevocation
from cloudless.store.types import EventType, Listing

log = logging.getLogger("cloudless.coordinator.http")
security_log = logging.getLogger("cloudless.security")

MAX_BODY = 1 << 20
IDENTITY = web.RequestKey("identity", SpiffeId)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(CloudlessError):
    def __init__(self, status: int, code: str, message: str, problems: list[str] | None = None):
        super().__init__(message, code=code)
        self.status = status
        self.problems = problems or []


def _json(data: Any, status: int = 200) -> web.Response:
    # Compact: ``indent`` makes the json module fall back from its C encoder to pure Python
    # (measured: a 3,500-node listing spent more time in the encoder than anywhere else).
    return web.json_response(data, status=status, dumps=json.dumps)


class NodeListingCache:
    """Each node's JSON as last listed, by its record's mod revision: a listing re-encodes
    only the nodes written since the previous one (usage refreshes touch ~100 nodes/s, so
    at 5,000 nodes a listing every few seconds reuses most of them)."""

    def __init__(self) -> None:
        self._by_key: dict[str, tuple[int, bytes]] = {}

    def render(self, table: Table[Node], listing: Listing) -> bytes:
        parts: list[bytes] = []
        problems: list[str] = []
        seen: dict[str, tuple[int, bytes]] = {}
        for kv in listing.kvs:
            hit = self._by_key.get(kv.key)
            if hit is None or hit[0] != kv.mod_revision:
                try:
                    node = table.decode(kv).value
                except DecodeError as e:
                    problems.append(str(e))
                    continue
                hit = (
                    kv.mod_revision,
                    b""
                    if node.state is NodeState.REMOVED
                    else json.dumps(node_view(node)).encode(),
                )
            seen[kv.key] = hit
            if hit[1]:
                parts.append(hit[1])
        self._by_key = seen
        return (
            b'{"nodes": ['
            + b", ".join(parts)
            + b'], "problems": '
            + json.dumps(problems).encode()
            + b"}"
        )


def node_view(n: Node) -> dict[str, Any]:
    return n.to_dict()


def replica_view(r: Replica) -> dict[str, Any]:
    return r.to_dict()


def workload_view(rec: WorkloadRecord, replicas: list[Replica] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rec.name,
        "version": rec.version,
        "deleted": rec.deleted,
        "replicas_wanted": rec.spec.replicas,
        "unplaced": rec.unplaced,
        "unplaced_reason": rec.unplaced_reason,
        "rollout": rec.rollout.to_dict(),
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "spec": workload_to_dict(rec.spec),
    }
    if replicas is not None:
        out["replicas"] = [replica_view(r) for r in replicas]
        out["replicas_running"] = sum(
            1 for r in replicas if r.observed.value == "running" and r.desired.value == "running"
        )
    return out


class UserApi:
    def __init__(
        self,
        *,
        state: ClusterState,
        hub: AgentHub,
        ca: CertificateAuthority,
        tokens: TokenManager,
        authorizer: Authorizer,
        revocations: RevocationList,
        clock: Clock,
        is_leader: Callable[[], bool],
        leader_api: Callable[[], str | None],
        agent_endpoints: Callable[[], list[str]],
        enroll_endpoints: Callable[[], list[str]] | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.state = state
        self.hub = hub
        self.ca = ca
        self.tokens = tokens
        self.authorizer = authorizer
        self.revocations = revocations
        self.clock = clock
        self.is_leader = is_leader
        self.leader_api = leader_api
        self.agent_endpoints = agent_endpoints
        self.enroll_endpoints = enroll_endpoints or agent_endpoints
        self.scheduler = scheduler or Scheduler()
        self._node_listing = NodeListingCache()
        self._columns: NodeColumns | None = None  # for _check_placeable
        self.secrets = SecretsApi(
            state.store, SecretBox(ca.secrets_key), clock, hub.fence, hub.emit
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/v1/ca", self.get_ca)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/nodes", self.list_nodes)
        r.add_get("/v1/nodes/{id}", self.get_node)
        r.add_post("/v1/nodes/{id}/cordon", self.cordon)
        r.add_post("/v1/nodes/{id}/uncordon", self.uncordon)
        r.add_post("/v1/nodes/{id}/drain", self.drain)
        r.add_delete("/v1/nodes/{id}", self.remove_node)
        r.add_post("/v1/workloads", self.apply)
        r.add_get("/v1/workloads", self.list_workloads)
        r.add_get("/v1/workloads/{name}", self.get_workload)
        r.add_post("/v1/workloads/{name}/scale", self.scale)
        r.add_delete("/v1/workloads/{name}", self.delete_workload)
        r.add_get("/v1/workloads/{name}/explain", self.explain)
        r.add_post("/v1/explain", self.explain_spec)
        r.add_get("/v1/replicas", self.list_replicas)
        r.add_get("/v1/volumes", self.list_volumes)
        self.secrets.add_routes(r)
        RolloutApi(self.state, self.clock, self.hub.fence, self.hub.emit).add_routes(r)
        r.add_get("/v1/replicas/{id}/logs", self.logs)
        r.add_post("/v1/tokens", self.create_token)
        r.add_get("/v1/tokens", self.list_tokens)
        r.add_delete("/v1/tokens/{id}", self.revoke_token)
        r.add_get("/v1/events", self.events)
        r.add_post("/v1/cluster/join", self.join_cluster)
        r.add_get("/v1/cluster/coordinators", self.list_coordinators)
        return app

    # ---- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except ApiError as e:
            return _error(e.status, e.code, e.message, e.problems)
        except ValidationError as e:
            return _error(400, "invalid", e.message, e.problems)
        except NotFound as e:
            return _error(404, "not_found", e.message)
        except Conflict as e:
            return _error(409, "conflict", e.message)
        except (Fenced, NotLeader) as e:
            return _error(503, "not_leader", f"{e}: retry, or ask the leader")
        except StoreError as e:
            return _error(503, "store_unavailable", f"the cluster store did not answer: {e}")
        except CloudlessError as e:
            return _error(400, e.code, e.message)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/v1/ca", "/openapi.json", "/v1/cluster/join"):
            return await handler(request)
        der = _peer_der(request)
        decision = self.authorizer.authorize(
            x509.load_der_x509_certificate(der) if der else None,
            expected_kind=(CertKind.USER, CertKind.SERVICE),
        )
        if not decision.allowed:
            msg = f"API {request.method} {request.path} from {request.remote} refused: "
            security_log.warning(msg + decision.reason)
            await self.hub.emit("security", msg + decision.reason)
            return _error(401 if der is None else 403, decision.code, decision.reason)
        assert decision.identity is not None
        request[IDENTITY] = decision.identity
        if request.method not in ("GET", "HEAD") and not self.is_leader():
            leader = self.leader_api()
            if not leader:
                return _error(503, "no_leader", "no leader elected yet; retry in a few seconds")
            raise web.HTTPTemporaryRedirect(leader.rstrip("/") + str(request.rel_url))
        return await handler(request)

    # ---- misc ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "is_leader": self.is_leader(), "leader": self.leader_api()})

    async def get_ca(self, request: web.Request) -> web.Response:
        return _json(
            {
                "ca_bundle_pem": self.ca.bundle_pem.decode(),
                "ca_digest": self.ca.digest,
                "agent_endpoints": self.agent_endpoints(),
                "enroll_endpoints": self.enroll_endpoints(),
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        from cloudless.coordinator.openapi import spec

        return _json(spec())

    # ---- nodes -----------------------------------------------------------------------------

    async def list_nodes(self, request: web.Request) -> web.Response:
        listing = await self.state.store.list(self.state.nodes.prefix)
        body = self._node_listing.render(self.state.nodes, listing)
        return web.Response(body=body, content_type="application/json")

    async def _node(self, node_id: str) -> Node:
        rec = await self.state.nodes.get(node_id)
        if rec is None:
            raise NotFound(f"node {node_id!r} not found: list nodes with `cloudless get nodes`")
        return rec.value

    async def get_node(self, request: web.Request) -> web.Response:
        node = await self._node(request.match_info["id"])
        replicas = [
            r.value
            for r in (await self.state.replicas.list()).records
            if r.value.node_id == node.id
        ]
        return _json({**node_view(node), "replicas": [replica_view(r) for r in replicas]})

    async def _set_node_state(self, node_id: str, target: NodeState, verb: str) -> web.Response:
        await self._node(node_id)
        refusal: list[str] = []

        def change(cur: Node | None) -> Node | None:
            if cur is None:
                return None
            new, why = cur.moved_to(target)
            if why:
                refusal.append(why)
            return new

        rec = await self.state.nodes.update(node_id, change, fence=self.hub.fence())
        if refusal:
            raise Conflict(f"cannot {verb} node {node_id}: {refusal[0]}")
        await self.hub.emit("node", f"node {node_id} {verb}ed by {self._who()}", node=node_id)
        assert rec is not None
        return _json(node_view(rec.value))

    def _who(self) -> str:
        return "user"

    async def cordon(self, request: web.Request) -> web.Response:
        return await self._set_node_state(request.match_info["id"], NodeState.CORDONED, "cordon")

    async def uncordon(self, request: web.Request) -> web.Response:
        return await self._set_node_state(request.match_info["id"], NodeState.READY, "uncordon")

    async def drain(self, request: web.Request) -> web.Response:
        return await self._set_node_state(request.match_info["id"], NodeState.DRAINING, "drain")

    async def remove_node(self, request: web.Request) -> web.Response:
        node_id = request.match_info["id"]
        await self._node(node_id)
        sid = SpiffeId.node(node_id, self.ca.trust_domain)
        now = self.clock.now()
        self.revocations.revoke_identity(sid, reason="node removed", at=now)
        await self.state.revocations.put(
            f"id:{node_id}",
            StoredRevocation(sid.uri, "node removed", now, now + 366 * 24 * 3600),
        )

        def change(cur: Node | None) -> Node | None:
            return None if cur is None else replace(cur, state=NodeState.REMOVED)

        await self.state.nodes.update(node_id, change, fence=self.hub.fence())
        await self.hub.emit(
            "node", f"node {node_id} removed; its certificate is revoked", node=node_id
        )
        return _json({"removed": node_id})

    # ---- workloads -------------------------------------------------------------------------

    async def apply(self, request: web.Request) -> web.Response:
        body = await request.read()
        spec = parse_workload_data(load_document(body))
        await self.secrets.check_refs(spec)
        await self._check_placeable(spec)
        now = self.clock.now()
        created: list[bool] = []

        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            created.clear()
            if cur is None:
                created.append(True)
                return WorkloadRecord(spec=spec, created_at=now, updated_at=now)
            new = cur.with_spec(spec, now)
            return None if new is cur else new

        rec = await self.state.workloads.update(spec.name, change, fence=self.hub.fence())
        assert rec is not None
        what = "created" if created else "configured"
        await self.hub.emit(
            "workload",
            f"workload {spec.name} {what} (version {rec.value.version})",
            workload=spec.name,
        )
        return _json(
            {"result": what, "workload": workload_view(rec.value)}, status=201 if created else 200
        )

    async def _check_placeable(self, spec: WorkloadSpec) -> None:
        """Refuse specs that can never fit on any node of the cluster (offline ones count:
        they may come back), with the scheduler's reasons. An empty cluster accepts all."""
        from cloudless.scheduler.validate import validate_placeable

        # The leader's nodes watch (``hub.known_nodes``) rather than a listing: at 5,000
        # nodes a listing costs a store range and 5,000 decodes in front of every apply.
        nodes = self.hub.known_nodes()
        if nodes is None:
            nodes = [r.value for r in (await self.state.nodes.list()).records]
        # Node columns reused from the previous apply for every node record that is the
        # same object (``NodeColumns.update``): building them for 5,000 nodes took longer
        # than the rest of the apply.
        cols = self._columns.update(nodes) if self._columns else NodeColumns.build(nodes)
        self._columns = cols
        problems = validate_placeable(spec, Snapshot.build(cols, (), {spec.name: spec}))
        if problems:
            raise ValidationError(problems)

    async def list_workloads(self, request: web.Request) -> web.Response:
        wls = await self.state.workloads.list()
        reps = await self.state.replicas.list(revision=wls.revision)
        by: dict[str, list[Replica]] = {}
        for r in reps.records:
            by.setdefault(r.value.workload, []).append(r.value)
        return _json(
            {"workloads": [workload_view(r.value, by.get(r.name, [])) for r in wls.records]}
        )

    async def _workload(self, name: str) -> WorkloadRecord:
        rec = await self.state.workloads.get(name)
        if rec is None:
            raise NotFound(f"workload {name!r} not found: list them with `cloudless get workloads`")
        return rec.value

    async def get_workload(self, request: web.Request) -> web.Response:
        rec = await self._workload(request.match_info["name"])
        reps = [
            r.value
            for r in (await self.state.replicas.list()).records
            if r.value.workload == rec.name
        ]
        return _json(workload_view(rec, reps))

    async def scale(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = await request.json()
            n = body["replicas"]
        except (ValueError, KeyError, TypeError):
            raise ValidationError('body: expected {"replicas": <n>}') from None
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 10_000:
            raise ValidationError(f"replicas: {n!r} must be a whole number in [0, 10000]")
        await self._workload(name)
        now = self.clock.now()

        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            if cur is None or cur.deleted:
                return None
            if cur.spec.replicas == n:
                return None
            return replace(cur, spec=replace(cur.spec, replicas=n), updated_at=now)

        rec = await self.state.workloads.update(name, change, fence=self.hub.fence())
        assert rec is not None
        await self.hub.emit("workload", f"workload {name} scaled to {n}", workload=name)
        return _json(workload_view(rec.value))

    async def delete_workload(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._workload(name)
        drop = request.query.get("volumes") in ("1", "true", "yes")

        def change(cur: WorkloadRecord | None) -> WorkloadRecord | None:
            if cur is None or (cur.deleted and cur.delete_volumes >= drop):
                return None
            return replace(cur, deleted=True, delete_volumes=cur.delete_volumes or drop)

        await self.state.workloads.update(name, change, fence=self.hub.fence())
        what = " and its volumes" if drop else ""
        await self.hub.emit("workload", f"workload {name}{what} deleting", workload=name)
        return _json({"deleted": name})

    async def _explain(self, spec: WorkloadSpec, top: int, first: str = "") -> web.Response:
        """``first``: a note that leads (a stateful replica waiting for its node)."""
        snap = await self.state.snapshot()
        v = snap.view
        specs = {n: r.spec for n, r in v.workloads.items() if not r.deleted}
        specs[spec.name] = spec
        sched_snap = Snapshot.build(list(v.nodes.values()), list(v.replicas.values()), specs)
        ex = self.scheduler.explain(sched_snap, spec, top=top)
        return _json(
            {
                "workload": spec.name,
                "summary": ex.rejections.message(),
                "rejections": ex.rejections.as_dict(),
                "best": [{"node": ns.node_id, **ns.components.to_dict()} for ns in ex.best],
                "notes": [first, *ex.notes] if first else list(ex.notes),
                "text": f"{first}\n{ex.render()}" if first else ex.render(),
            }
        )

    async def explain(self, request: web.Request) -> web.Response:
        rec = await self._workload(request.match_info["name"])
        waiting = rec.unplaced_reason if rec.spec.volumes and rec.unplaced else ""
        return await self._explain(rec.spec, _int_q(request, "top", 10), waiting)

    async def explain_spec(self, request: web.Request) -> web.Response:
        spec = parse_workload_data(load_document(await request.read()))
        return await self._explain(spec, _int_q(request, "top", 10))

    async def list_replicas(self, request: web.Request) -> web.Response:
        wl = request.query.get("workload")
        node = request.query.get("node")
        reps = [r.value for r in (await self.state.replicas.list()).records]
        reps = [r for r in reps if (not wl or r.workload == wl) and (not node or r.node_id == node)]
        return _json({"replicas": [replica_view(r) for r in reps]})

    async def list_volumes(self, request: web.Request) -> web.Response:
        wls = await self.state.workloads.list()
        reps = await self.state.replicas.list(revision=wls.revision)
        rows = volume_rows((w.value for w in wls.records), (r.value for r in reps.records))
        wl = request.query.get("workload")
        return _json({"volumes": [v for v in rows if not wl or v["workload"] == wl]})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["id"]
        if not self.is_leader():
            leader = self.leader_api()
            if not leader:
                raise ApiError(503, "no_leader", "no leader elected yet; retry")
            raise web.HTTPTemporaryRedirect(leader.rstrip("/") + str(request.rel_url))
        follow = request.query.get("follow") in ("1", "true", "yes")
        tail = _int_q(request, "tail", 0)
        try:
            cm = self.hub.log_stream(rid, follow=follow, tail=tail, request_id=secrets.token_hex(8))
            async with cm as q:
                resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
                await resp.prepare(request)
                try:
                    while True:
                        chunk = await q.get()
                        if chunk.error:
                            await resp.write(f"error: {chunk.error}\n".encode())
                        if chunk.data:
                            await resp.write(chunk.data)
                        if chunk.eof:
                            break
                    await resp.write_eof()
                except ConnectionResetError:
                    pass  # the client went away (Ctrl-C on `logs -f`)
                return resp
        except LookupError as e:
            raise NotFound(str(e)) from None
        except ConnectionError as e:
            raise ApiError(503, "node_unreachable", str(e)) from None

    # ---- tokens ----------------------------------------------------------------------------

    async def create_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise ValidationError("body: not JSON") from None
        if not isinstance(body, dict):
            raise ValidationError("body: expected a JSON object")
        use_raw = body.get("use", TokenUse.NODE_ENROLLMENT.value)
        try:
            use = TokenUse(use_raw)
        except ValueError:
            uses = ", ".join(u.value for u in TokenUse)
            raise ValidationError(f"use: {use_raw!r} is not one of {uses}") from None
        ttl = body.get("ttl_seconds", 24 * 3600)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise ValidationError(f"ttl_seconds: {ttl!r} must be a positive number")
        labels = body.get("labels", {})
        if not isinstance(labels, dict):
            raise ValidationError("labels: expected an object of strings")
        try:
            issued = await self.tokens.create(
                use,
                ttl_seconds=float(ttl),
                labels={str(k): str(v) for k, v in labels.items()},
                description=str(body.get("description", "")),
            )
        except ValueError as e:
            raise ValidationError(str(e)) from None
        await self.hub.emit("token", f"token {issued.record.token_id} created ({use.value})")
        return _json({"token": issued.token, "record": issued.record.to_dict()}, status=201)

    async def list_tokens(self, request: web.Request) -> web.Response:
        recs = await self.tokens.list()
        now = self.clock.now()
        return _json({"tokens": [{**r.to_dict(), "state": r.state(now)} for r in recs]})

    async def revoke_token(self, request: web.Request) -> web.Response:
        rec = await self.tokens.revoke(request.match_info["id"])
        await self.hub.emit("token", f"token {rec.token_id} revoked")
        return _json({"record": rec.to_dict()})

    # ---- cluster ---------------------------------------------------------------------------

    async def join_cluster(self, request: web.Request) -> web.Response:
        """A new coordinator spends a coordinator-join token and receives the CA material and
        the etcd endpoints (K3s-style bootstrap data). Any coordinator can answer: the token
        is spent atomically in the replicated store."""
        try:
            body = await request.json()
            token, name = str(body["token"]), str(body["name"])
        except (ValueError, KeyError, TypeError):
            raise ValidationError('body: expected {"token": ..., "name": ...}') from None
        from cloudless.coordinator.joining import ca_material, known_coordinators
        from cloudless.lib.ids import is_valid_id

        if not is_valid_id(name):
            raise ValidationError(f"name: {name!r} must be a DNS label (a-z, 0-9, '-')")
        try:
            claims = await self.tokens.verify(token, TokenUse.COORDINATOR_JOIN)
            others = await known_coordinators(self.state.store)
            if any(c.name == name for c in others):
                raise Conflict(f"a coordinator named {name} is already a member")
            await self.tokens.redeem(claims, consumer=f"coordinator/{name}")
        except CloudlessError as e:
            security_log.warning("coordinator join from %s refused: %s", request.remote, e)
            await self.hub.emit("security", f"coordinator join from {request.remote} refused: {e}")
            raise ApiError(403, e.code, e.message) from None
        await self.hub.emit("cluster", f"coordinator {name} joining")
        return _json(
            {
                "ca": ca_material(self.ca.directory),
                "etcd_endpoints": [c.etcd_client for c in others if c.etcd_client],
                "trust_domain": self.ca.trust_domain,
            }
        )

    async def list_coordinators(self, request: web.Request) -> web.Response:
        from dataclasses import asdict

        from cloudless.coordinator.joining import known_coordinators

        cs = await known_coordinators(self.state.store)
        return _json({"coordinators": [asdict(c) for c in cs], "leader": self.leader_api()})

    # ---- events ----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        follow = request.query.get("follow") in ("1", "true", "yes")
        listing = await self.state.events.list()
        tail = _int_q(request, "tail", 50)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        try:
            for rec in listing.records[-tail:] if tail else []:
                await resp.write(json.dumps(rec.value).encode() + b"\n")
            if follow:
                async for ev in self.state.events.watch(start_revision=listing.revision + 1):
                    if ev.type is EventType.PUT and ev.record is not None:
                        await resp.write(json.dumps(ev.record.value).encode() + b"\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away (Ctrl-C on `events -f`): nothing to answer
        return resp


def _int_q(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ValidationError(f"query {name}: {raw!r} is not a whole number") from None
    if v < 0:
        raise ValidationError(f"query {name}: {v} is negative")
    return v


def _error(status: int, code: str, message: str, problems: list[str] | None = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if problems:
        body["problems"] = problems
    return _json({"error": body}, status=status)


def _peer_der(request: web.Request) -> bytes | None:
    sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
    if not isinstance(sslobj, ssl.SSLObject | ssl.SSLSocket):
        return None
    return sslobj.getpeercert(binary_form=True)


def server_ssl_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """TLS 1.2+ server context that asks for (but does not require) a client certificate:
    ``/v1/ca`` must be reachable by nodes that have none yet; every other route checks one."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
