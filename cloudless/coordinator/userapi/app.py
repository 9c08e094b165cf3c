"""The user-facing HTTPS/JSON API (aiohttp), authenticated by client certificate.

Every coordinator serves it. Reads are answered locally from the store; every mutating call
on a follower is answered ``307 Temporary Redirect`` to the same path on the leader. Errors
are JSON ``{"error": {"code", "message", "problems"?}}`` with a status that fits: 400 invalid
input, 401 no or bad certificate, 403 not allowed, 404 unknown, 405 wrong method, 409
conflict, 413 body too large, 503 no leader; ``problems`` lists ``<field path>: <reason>``.
Every error, the framework's own included, has that shape (``http_errors``).

Bodies are parsed by ``cloudless.lib.bounded`` (depth, size, alias expansion and number
bounds) before anything walks them, on unauthenticated routes too; JSON bodies are then
validated by the request models of ``api_models``, which ``openapi.py`` publishes.

``/v1/ca`` and ``/healthz`` need no certificate: a joining node fetches the CA bundle there
and checks it against the digest in its token before it trusts anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web
from cryptography import x509
from opentelemetry.trace import Span

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.churn.keeper import describe_node, history_model, history_table, with_reserved
from cloudless.churn.target import predict
from cloudless.coordinator.deciders import commands
from cloudless.coordinator.eventlog.query import (
    CONTINUE_HEADER,
    MORE_HEADER,
    EventQuery,
    feed,
    read_page,
)
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.node_view import NodeView
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.errors import (
    MAX_BODY,
    ApiError,
    error_response,
    errors,
    json_response,
    redirect_to_leader,
)
from cloudless.coordinator.userapi.models import (
    DrainRequest,
    JoinRequest,
    ScaleRequest,
    TokenRequest,
    parse_request,
)
from cloudless.coordinator.userapi.rollout_routes import RolloutApi
from cloudless.coordinator.userapi.s3_routes import S3Api
from cloudless.coordinator.userapi.secrets_routes import SecretsApi
from cloudless.coordinator.userapi.top_routes import LiveUsage, TopApi
from cloudless.coordinator.userapi.volumes import volume_rows
from cloudless.lib.bounded import load_json, show
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, Conflict, NotFound, ValidationError
from cloudless.model.departure import Departure, DepartureKind
from cloudless.model.node import Node, NodeState
from cloudless.model.replica import DesiredState, Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.model.workload_codec import parse_workload_data, workload_to_dict
from cloudless.network import state as network_state
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.netpolicy_api import NetPolicyApi
from cloudless.network.observer import overlay_records
from cloudless.network.services import ServiceKey, label_problem
from cloudless.network.views import network_status, node_overlay, service_detail
from cloudless.observability.tracing import traceparent, tracer
from cloudless.policy.routes import PUBLIC
from cloudless.scheduler.plan import Explanation
from cloudless.scheduler.scheduler import Scheduler
from cloudless.scheduler.snapshot import NodeColumns, Snapshot
from cloudless.security.authz import Authorizer
from cloudless.security.ca import CertificateAuthority
from cloudless.security.errors import TokenNotFound
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.secretbox import SecretBox
from cloudless.security.tokens import TokenManager, TokenUse
from cloudless.store.errors import DecodeError
from cloudless.store.fence import Fence
from cloudless.store.table import Table
from cloudless.store.tables.revocations import Revocation as StoredRevocation
from cloudless.store.types import Listing

if TYPE_CHECKING:
    from cloudless.clusterops.rotation_runner import RootRotation

log = logging.getLogger("cloudless.coordinator.http")
security_log = logging.getLogger("cloudless.security")

MAX_TAIL = 100_000
_PATH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
IDENTITY = web.RequestKey("identity", SpiffeId)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


T = TypeVar("T")


class LogSource(Protocol):
    """Where ``GET /v1/replicas/{id}/logs`` gets a replica's logs (the dispatcher routes the
    request to the agent holding it). ``LookupError``: no such replica; ``ConnectionError``:
    its node is not connected."""

    def __call__(
        self, replica_id: str, *, follow: bool, tail: int, request_id: str
    ) -> AbstractAsyncContextManager[asyncio.Queue[pb.LogChunk]]: ...


class UserApi:
    def __init__(
        self,
        *,
        state: ClusterState,
        fence: Callable[[], Fence],
        recorder: EventRecorder,
        live_nodes: NodeView | None = None,
        log_source: LogSource | None = None,
        network_states: Mapping[str, str] | None = None,
        live_usage: LiveUsage | None = None,
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
        #: The election's fence for every leader-only write (``Fenced`` when not leading).
        self.fence = fence
        self.recorder = recorder
        self.live_nodes = live_nodes
        self.log_source = log_source
        #: The leader's live replica usage (``cloudless top``); None: those routes answer 503.
        self.live_usage = live_usage
        #: Each node's container network as its agent last reported it (the dispatcher's).
        self.network_states: Mapping[str, str] = (
            network_states if network_states is not None else {}
        )
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
        #: The cluster's network ranges (None: the coordinator runs without --network).
        self.network_config: AddressPlanConfig | None = None
        self._node_listing = NodeListingCache()
        self.rotation: RootRotation | None = None  # POST /v1/ca/rotate; set by the server
        self._columns: NodeColumns | None = None  # for _check_placeable
        self.secrets = SecretsApi(
            state.store, SecretBox(ca.secrets_key), clock, fence, recorder.emit
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors, self._auth], client_max_size=MAX_BODY)
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
        r.add_get("/v1/services", self.list_services)
        r.add_get("/v1/services/{name}", self.get_service)
        r.add_get("/v1/network", self.network_status)
        r.add_get("/v1/volumes", self.list_volumes)
        self.secrets.add_routes(r)
        NetPolicyApi(self.state, self.fence, self.recorder.emit).add_routes(r)
        S3Api(
            self.state.store, self.secrets.current_box, self.clock, self.recorder.emit
        ).add_routes(r)
        RolloutApi(self.state, self.clock, self.fence, self.recorder.emit).add_routes(r)
        TopApi(self.live_usage, self.live_nodes, self.is_leader, self.leader_api).add_routes(r)
        r.add_get("/v1/replicas/{id}/logs", self.logs)
        r.add_post("/v1/tokens", self.create_token)
        r.add_get("/v1/tokens", self.list_tokens)
        r.add_delete("/v1/tokens/{id}", self.revoke_token)
        r.add_get("/v1/events", self.events)
        r.add_post("/v1/cluster/join", self.join_cluster)
        r.add_get("/v1/cluster/coordinators", self.list_coordinators)
        from cloudless.clusterops.api import install as install_ops
        from cloudless.policy.access import install

        install_ops(app, self)  # /v1/ca/status, DELETE /v1/cluster/coordinators/{name}
        install(app, self)  # roles on every route, audit of writes, /v1/users|roles|audit
        return app

    # ---- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC:
            return await handler(request)
        if request.path == "/ui" or request.path.startswith("/ui/"):
            return await handler(request)  # the console checks its session cookie itself
        der = _peer_der(request)
        decision = self.authorizer.authorize(
            x509.load_der_x509_certificate(der) if der else None,
            expected_kind=(CertKind.USER, CertKind.SERVICE),
        )
        if not decision.allowed:
            msg = f"API {request.method} {request.path} from {request.remote} refused: "
            security_log.warning(msg + decision.reason)
            await self.recorder.emit("security", msg + decision.reason)
            return error_response(401 if der is None else 403, decision.code, decision.reason)
        assert decision.identity is not None
        request[IDENTITY] = decision.identity
        if request.method not in ("GET", "HEAD") and not self.is_leader():
            redirect_to_leader(
                request, self.leader_api(), "no leader elected yet; retry in a few seconds"
            )
        return await handler(request)

    # ---- misc ------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(
            {"ok": True, "is_leader": self.is_leader(), "leader": self.leader_api()}
        )

    async def get_ca(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "ca_bundle_pem": self.ca.bundle_pem.decode(),
                "ca_digest": self.ca.digest,
                "agent_endpoints": self.agent_endpoints(),
                "enroll_endpoints": self.enroll_endpoints(),
            }
        )

    async def openapi(self, request: web.Request) -> web.Response:
        from cloudless.coordinator.userapi.openapi import spec

        return json_response(spec())

    # ---- nodes -----------------------------------------------------------------------------

    async def list_nodes(self, request: web.Request) -> web.Response:
        listing = await self.state.store.list(self.state.nodes.prefix)
        body = self._node_listing.render(self.state.nodes, listing)
        return web.Response(body=body, content_type="application/json")

    async def _node(self, node_id: str) -> Node:
        _check_id(node_id, "path.id")
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
        history = await history_table(self.state.store).get(node.id)
        availability = describe_node(node, history.value if history else None, self.clock.now())
        doc = {
            **node_view(node),
            "replicas": [replica_view(r) for r in replicas],
            "availability": availability,
        }
        if self.network_config is not None:
            doc["overlay"] = await self._node_overlay(node.id)
        return json_response(doc)

    async def _node_overlay(self, node_id: str) -> dict[str, Any]:
        """The node's overlay as observed (``describe node``): NAT type, reachability, paths."""
        store = self.state.store
        devices = await network_state.list_devices(store)
        names = await self._node_names()
        by_ip = {d.overlay_ip: names.get(n, n) for n, d in devices.items()}
        dev = devices.get(node_id)
        doc = node_overlay((await overlay_records(store)).get(node_id), by_ip)
        doc["overlay_ip"] = dev.overlay_ip if dev else ""
        return doc

    async def _command(
        self, table: Table[T], name: str, command: Callable[[T | None], commands.Decision[T]]
    ) -> tuple[T, commands.Decision[T]]:
        """Run a user command (``deciders.commands``) on ``name``'s record with compare-and-
        swap and the election's fence; its refusal raised as the API's error."""
        decided: list[commands.Decision[T]] = []

        def change(cur: T | None) -> T | None:
            decided[:] = [command(cur)]
            return decided[0].write

        rec = await table.update(name, change, fence=self.fence())
        decided[0].check()
        assert rec is not None
        return rec.value, decided[0]

    async def _set_node_state(
        self, node_id: str, command: Callable[[Node | None, str], commands.Decision[Node]]
    ) -> web.Response:
        """Run a node command (a drain may carry a deadline: ``commands.drain``)."""
        await self._node(node_id)
        node, d = await self._command(self.state.nodes, node_id, lambda c: command(c, node_id))
        await self.recorder.emit("node", f"{d.event} by {self._who()}", node=node_id)
        return json_response(node_view(node))

    def _who(self) -> str:
        return "user"

    async def cordon(self, request: web.Request) -> web.Response:
        return await self._set_node_state(request.match_info["id"], commands.cordon)

    async def uncordon(self, request: web.Request) -> web.Response:
        return await self._set_node_state(request.match_info["id"], commands.uncordon)

    async def drain(self, request: web.Request) -> web.Response:
        body = await request.read()
        ask = (
            parse_request(DrainRequest, load_json(body))
            if body.strip()
            else DrainRequest(deadline_s=None)
        )
        dep = None
        if ask.deadline_s is not None:
            now = self.clock.now()
            dep = Departure(DepartureKind.DRAIN, "drained by user", now, now + ask.deadline_s)
        return await self._set_node_state(
            request.match_info["id"], lambda cur, node_id: commands.drain(cur, node_id, dep)
        )

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
        _, d = await self._command(self.state.nodes, node_id, lambda c: commands.remove(c, node_id))
        await self.recorder.emit("node", d.event, node=node_id)
        return json_response({"removed": node_id})

    # ---- workloads -------------------------------------------------------------------------

    async def apply(self, request: web.Request) -> web.Response:
        with tracer().start_as_current_span("apply") as span:
            return await self._apply(request, span)

    async def _apply(self, request: web.Request, span: Span) -> web.Response:
        with tracer().start_as_current_span("validate"):
            spec = await _spec(await request.read())
            await self.secrets.check_refs(spec)
            await self._check_placeable(spec)
        span.set_attribute("cloudless.workload", spec.name)
        trace = traceparent(span)  # "" when tracing is off: nothing stored
        now = self.clock.now()
        with tracer().start_as_current_span("commit"):
            rec, d = await self._command(
                self.state.workloads, spec.name, lambda c: commands.apply(c, spec, now, trace)
            )
        await self.recorder.emit("workload", d.event, workload=spec.name)
        what = "created" if d.created else "configured"
        return json_response(
            {"result": what, "workload": workload_view(rec)}, status=201 if d.created else 200
        )

    async def _check_placeable(self, spec: WorkloadSpec) -> None:
        """Refuse specs that can never fit on any node of the cluster (offline ones count:
        they may come back), with the scheduler's reasons. An empty cluster accepts all."""
        from cloudless.scheduler.validate import validate_placeable

        # The leader's nodes view rather than a listing: at 5,000 nodes a listing costs a
        # store range and 5,000 decodes in front of every apply.
        nodes = self.live_nodes.known() if self.live_nodes is not None else None
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
        ns = request.query.get("namespace")
        recs = [r for r in wls.records if not ns or r.value.spec.namespace == ns]
        return json_response(
            {"workloads": [workload_view(r.value, by.get(r.name, [])) for r in recs]}
        )

    async def list_services(self, request: web.Request) -> web.Response:
        """Services (cloudless/network): VIP, ports, endpoints ready/total."""
        records = await network_state.list_services(self.state.store)
        return json_response({"services": [network_state.service_view(s) for s in records]})

    async def get_service(self, request: web.Request) -> web.Response:
        """One service: VIP, names, ports, endpoints with their nodes, why some are missing."""
        name = request.match_info["name"]
        ns = request.query.get("namespace", "default")
        for field, value in (("path.name", name), ("query.namespace", ns)):
            why = label_problem(field, value)
            if why:
                raise ValidationError(why)
        rec = await network_state.get_service(self.state.store, ServiceKey(ns, name))
        if rec is None:
            raise NotFound(
                f"service {name!r} not found in namespace {ns!r}: a workload with ports is a "
                "service when the coordinator runs with --network; list them with "
                "`cloudless get services`"
            )
        return json_response(service_detail(rec, await self._node_names()))

    async def network_status(self, request: web.Request) -> web.Response:
        """The address plan, the lighthouse and every node's slot."""
        devices = await network_state.list_devices(self.state.store)
        names = await self._node_names()
        overlay = await overlay_records(self.state.store) if self.network_config else {}
        return json_response(
            network_status(self.network_config, devices, names, self.network_states, overlay)
        )

    async def _node_names(self) -> dict[str, str]:
        return {r.name: r.value.name for r in (await self.state.nodes.list()).records}

    async def _workload(self, name: str) -> WorkloadRecord:
        _check_id(name, "path.name")
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
        return json_response(workload_view(rec, reps))

    async def scale(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        n = parse_request(ScaleRequest, load_json(await request.read())).replicas
        await self._workload(name)
        now = self.clock.now()
        rec, d = await self._command(
            self.state.workloads, name, lambda c: commands.scale(c, name, n, now)
        )
        await self.recorder.emit("workload", d.event, workload=name)
        return json_response(workload_view(rec))

    async def delete_workload(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._workload(name)
        drop = request.query.get("volumes") in ("1", "true", "yes")
        _, d = await self._command(
            self.state.workloads, name, lambda c: commands.delete(c, name, volumes=drop)
        )
        await self.recorder.emit("workload", d.event, workload=name)
        return json_response({"deleted": name})

    async def explanation(self, spec: WorkloadSpec, top: int) -> Explanation:
        """Where one more replica of ``spec`` would go now, and why other nodes would not."""
        snap = await self.state.snapshot()
        v = snap.view
        specs = {n: r.spec for n, r in v.workloads.items() if not r.deleted}
        specs[spec.name] = spec
        sched_snap = Snapshot.build(list(v.nodes.values()), list(v.replicas.values()), specs)
        return self.scheduler.explain(sched_snap, spec, top=top)

    async def _explain(self, spec: WorkloadSpec, top: int, first: str = "") -> web.Response:
        """``first``: a note that leads (a stateful replica waiting for its node)."""
        ex = await self.explanation(spec, top)
        notes = [first, *ex.notes] if first else list(ex.notes)
        text = f"{first}\n{ex.render()}" if first else ex.render()
        predicted = await self._predicted_availability(spec)
        if predicted:
            notes.append(predicted)
            text = f"{text}\n{predicted}"
        return json_response(
            {
                "workload": spec.name,
                "summary": ex.rejections.message(),
                "rejections": ex.rejections.as_dict(),
                "best": [{"node": ns.node_id, **ns.components.to_dict()} for ns in ex.best],
                "notes": notes,
                "text": text,
            }
        )

    async def _predicted_availability(self, spec: WorkloadSpec) -> str:
        """What the workload's live replicas are predicted to give over the next 6 h, from
        the nodes' learned availability (``churn.keeper``); "" without live replicas."""
        v = (await self.state.snapshot()).view
        live = sorted(
            r.node_id
            for r in v.replicas.values()
            if r.workload == spec.name
            and r.desired is DesiredState.RUNNING
            and r.observed is not ReplicaState.LOST
            and r.node_id in v.nodes
        )
        if not live:
            return ""
        now = self.clock.now()
        models = {}
        for rec in (await history_table(self.state.store).list()).records:
            m = history_model(rec.value, now) if rec.name in v.nodes else None
            if m is not None:
                models[rec.name] = with_reserved(m, v.nodes[rec.name].reserved_hours)
        target = spec.placement.availability_target or 0.999
        return predict(live, models, now, target=target).explain() + " over the next 6 h"

    async def explain(self, request: web.Request) -> web.Response:
        rec = await self._workload(request.match_info["name"])
        waiting = rec.unplaced_reason if rec.spec.volumes and rec.unplaced else ""
        return await self._explain(rec.spec, _int_q(request, "top", 10), waiting)

    async def explain_spec(self, request: web.Request) -> web.Response:
        spec = await _spec(await request.read())
        return await self._explain(spec, _int_q(request, "top", 10))

    async def list_replicas(self, request: web.Request) -> web.Response:
        wl = request.query.get("workload")
        node = request.query.get("node")
        reps = [r.value for r in (await self.state.replicas.list()).records]
        reps = [r for r in reps if (not wl or r.workload == wl) and (not node or r.node_id == node)]
        return json_response({"replicas": [replica_view(r) for r in reps]})

    async def list_volumes(self, request: web.Request) -> web.Response:
        wls = await self.state.workloads.list()
        reps = await self.state.replicas.list(revision=wls.revision)
        rows = volume_rows((w.value for w in wls.records), (r.value for r in reps.records))
        wl = request.query.get("workload")
        return json_response({"volumes": [v for v in rows if not wl or v["workload"] == wl]})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["id"]
        _check_id(rid, "path.id")
        if not self.is_leader():
            redirect_to_leader(request, self.leader_api(), "no leader elected yet; retry")
        follow = request.query.get("follow") in ("1", "true", "yes")
        tail = _int_q(request, "tail", 0)
        if self.log_source is None:
            raise ApiError(503, "node_unreachable", "this coordinator routes no logs")
        try:
            cm = self.log_source(rid, follow=follow, tail=tail, request_id=secrets.token_hex(8))
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
        raw = await request.read()
        body = parse_request(TokenRequest, load_json(raw) if raw.strip() else {})
        issued = await self.tokens.create(
            body.use,
            ttl_seconds=body.ttl_seconds,
            labels=body.labels,
            description=body.description,
        )
        await self.recorder.emit(
            "token", f"token {issued.record.token_id} created ({body.use.value})"
        )
        return json_response(
            {"token": issued.token, "record": issued.record.public_dict()}, status=201
        )

    async def list_tokens(self, request: web.Request) -> web.Response:
        recs = await self.tokens.list()
        now = self.clock.now()
        return json_response({"tokens": [{**r.public_dict(), "state": r.state(now)} for r in recs]})

    async def revoke_token(self, request: web.Request) -> web.Response:
        token_id = request.match_info["id"]
        _check_id(token_id, "path.id")
        try:
            rec = await self.tokens.revoke(token_id)
        except TokenNotFound as e:
            raise NotFound(e.message) from None
        await self.recorder.emit("token", f"token {rec.token_id} revoked")
        return json_response({"record": rec.public_dict()})

    # ---- cluster ---------------------------------------------------------------------------

    async def join_cluster(self, request: web.Request) -> web.Response:
        """A new coordinator spends a coordinator-join token and receives the CA material and
        the etcd endpoints (K3s-style bootstrap data). Any coordinator can answer: the token
        is spent atomically in the replicated store."""
        body = parse_request(JoinRequest, load_json(await request.read()))
        token, name = body.token, body.name
        from cloudless.coordinator.state.coordinators import known_coordinators
        from cloudless.coordinator.wiring.joining import ca_material

        try:
            claims = await self.tokens.verify(token, TokenUse.COORDINATOR_JOIN)
            others = await known_coordinators(self.state.store)
            if any(c.name == name for c in others):
                raise Conflict(f"a coordinator named {name} is already a member")
            await self.tokens.redeem(claims, consumer=f"coordinator/{name}")
        except CloudlessError as e:
            security_log.warning("coordinator join from %s refused: %s", request.remote, e)
            await self.recorder.emit(
                "security", f"coordinator join from {request.remote} refused: {e}"
            )
            raise ApiError(403, e.code, e.message) from None
        await self.recorder.emit("cluster", f"coordinator {name} joining")
        return json_response(
            {
                "ca": ca_material(self.ca.directory),
                "etcd_endpoints": [c.etcd_client for c in others if c.etcd_client],
                "trust_domain": self.ca.trust_domain,
            }
        )

    async def list_coordinators(self, request: web.Request) -> web.Response:
        from dataclasses import asdict

        from cloudless.coordinator.state.coordinators import known_coordinators

        cs = await known_coordinators(self.state.store)
        return json_response({"coordinators": [asdict(c) for c in cs], "leader": self.leader_api()})

    # ---- events ----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """NDJSON, one event a line with its ``revision`` and ``id``; paging and filters in
        ``cloudless.coordinator.eventlog.query``. ``Cloudless-Continue`` carries the position
        to pass as ``continue`` for the next page (or to follow on from, without a gap)."""
        query = EventQuery.parse(request.query)
        got = await read_page(self.state.events, query)
        headers = {"Content-Type": "application/x-ndjson", CONTINUE_HEADER: got.next.token}
        if got.more:
            headers[MORE_HEADER] = "1"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        try:
            for body in got.events:
                await resp.write(json.dumps(body).encode() + b"\n")
            if query.follow:
                async with contextlib.aclosing(feed(self.state.events, query, got.next)) as bodies:
                    async for body in bodies:
                        await resp.write(json.dumps(body).encode() + b"\n")
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away (Ctrl-C on `events -f`): nothing to answer
        return resp


THREAD_BODY = 64 * 1024


async def _spec(body: bytes) -> WorkloadSpec:
    """A spec body parsed (and validated); one larger than ``THREAD_BODY`` in a worker
    thread, so that its parse never holds up the agents' streams on this loop."""
    if len(body) > THREAD_BODY:
        return await asyncio.to_thread(parse_workload_data, body)
    return parse_workload_data(body)


def _int_q(request: web.Request, name: str, default: int, hi: int = MAX_TAIL) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
        raise ValidationError(f"query.{name}: {show(raw)} is not a whole number")
    v = int(raw)
    if v > hi:
        raise ValidationError(f"query.{name}: {v} is out of range [0, {hi}]")
    return v


def _check_id(value: str, path: str) -> None:
    """A name or id in a URL path: refused with the path before it reaches a store key."""
    if not _PATH_ID.match(value):
        raise ValidationError(
            f"{path}: {show(value)} is not a name or id (letters, digits, '.', '_', '-')"
        )


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
