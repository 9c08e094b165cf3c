"""The agent-facing gRPC API: enrollment (server-authenticated TLS) and control (mutual TLS).

One ``grpc.aio`` server serves both services on the agent port; every ``AgentControl`` call
checks the peer certificate itself through the ``Authorizer`` (a call with no certificate,
a foreign CA, an expired or revoked certificate, or a node speaking for another node's id is
refused with ``UNAUTHENTICATED``/``PERMISSION_DENIED`` and a reason). Followers answer
``Connect`` with a redirect to the leader. What an agent reports is checked by
``agent_input`` (bad facts: ``INVALID_ARGUMENT`` naming each field). A ``Connect`` call is
served by ``AgentSessions`` over the gRPC channel of ``cloudless.transport``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from cryptography import x509

from cloudless.api.convert import resources_from_pb
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.coordinator.agentapi.checks import enrollment_problems, reserved_problems
from cloudless.coordinator.agentapi.enrollment import Enroller
from cloudless.coordinator.agentapi.sessions import AgentSessions
from cloudless.coordinator.agentapi.sessions import details as _details
from cloudless.coordinator.dispatcher.dispatcher import Dispatcher
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.model.node import Node, NodeState
from cloudless.observability.http import metrics_address_problem
from cloudless.observability.metrics import ENROLLMENTS
from cloudless.security import svid
from cloudless.security.authz import Authorizer
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.tokens import TokenClaims, TokenManager
from cloudless.store.errors import StoreError
from cloudless.store.tables.replicas import replica_name
from cloudless.store.tokens import StoreTokenStore
from cloudless.transport.grpc_channel import serve_connect

log = logging.getLogger("cloudless.coordinator.agentapi.service")
security_log = logging.getLogger("cloudless.security")


def peer_certificate(context: grpc.aio.ServicerContext) -> bytes | None:
    auth = context.auth_context() or {}
    certs = auth.get("x509_pem_cert")
    return certs[0] if certs else None


class AgentApi(pbg.EnrollmentServicer, pbg.AgentControlServicer):
    ENDPOINTS_TTL_S = 5.0  # how stale the coordinator list in an EnrollResponse may be

    def __init__(
        self,
        *,
        state: ClusterState,
        dispatcher: Dispatcher,
        events: EventRecorder,
        ca: CertificateAuthority,
        tokens: TokenManager,
        authorizer: Authorizer,
        clock: Clock,
        leader_address: Callable[[], str | None],
        agent_endpoints: Callable[[], list[str]],
    ) -> None:
        self.state = state
        self.dispatcher = dispatcher
        self.events = events
        self.ca = ca
        self.tokens = tokens
        self.authorizer = authorizer
        self.clock = clock
        self.leader_address = leader_address
        self.agent_endpoints = agent_endpoints
        self._enroll: Enroller | None = None
        self._endpoints_lock = asyncio.Lock()
        self._others: tuple[float, list[str]] | None = None  # (when listed, agent endpoints)
        self.sessions = AgentSessions(
            dispatcher=dispatcher,
            clock=clock,
            leader_address=leader_address,
            agent_endpoints=agent_endpoints,
            refused=self._refused,
        )

    # ---- enrollment ------------------------------------------------------------------------

    async def GetCA(
        self, request: pb.GetCARequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCAResponse:
        return pb.GetCAResponse(ca_bundle_pem=self.ca.bundle_pem)

    async def Enroll(
        self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrollResponse:
        """See ``cloudless.coordinator.agentapi.enrollment``: refusals are
        ``PERMISSION_DENIED`` with the reason; a store that stays unsure is ``UNAVAILABLE``
        (the agent retries with the same CSR, and a retry after a landed write gets its
        certificate)."""
        peer = context.peer()
        facts = request.facts
        problems = enrollment_problems(request.node_name, facts)
        if problems:
            await self._refused(f"enrollment from {peer} refused: {_details(problems)}")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _details(problems))

        def node_for(node_id: str, claims: TokenClaims) -> Node:
            problem = metrics_address_problem(facts.metrics_address)
            if problem:
                raise ValidationError(f"node facts: {problem}")
            for p in reserved_problems(facts.reserved_hours):
                raise ValidationError(f"node {p}")
            labels = dict(facts.labels)
            labels.update(claims.labels)  # labels pinned by the token win
            return Node.make(
                node_id,
                name=request.node_name or node_id,
                labels=labels,
                region=labels.get("region", facts.region),
                zone=labels.get("zone", facts.zone),
                arch=facts.arch or "amd64",
                os=facts.os or "linux",
                device_class=facts.device_class or "server",
                capacity=resources_from_pb(facts.capacity),
                allocatable=resources_from_pb(facts.allocatable),
                state=NodeState.ENROLLING,
                address=facts.address,
                public=facts.public,
                nat=not facts.public,
                cost_per_hour=facts.cost_per_hour,
                enrolled_at=self.clock.now(),
                metrics_address=facts.metrics_address,
                reserved_hours=frozenset(facts.reserved_hours),
                nebula_public_key=facts.nebula_public_key,
            )

        try:
            done = await self._enroller().enroll(request.token, request.csr_pem, node_for)
        except StoreError as e:
            ENROLLMENTS.labels("unavailable").inc()
            log.warning("enrollment from %s not completed: %s", peer, e)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cluster store busy ({e}); retry")
            raise  # unreachable: abort raises
        except CloudlessError as e:
            ENROLLMENTS.labels("refused").inc()
            await self._refused(f"enrollment from {peer} refused: {e}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            raise  # unreachable: abort raises
        ENROLLMENTS.labels("enrolled").inc()
        return pb.EnrollResponse(
            node_id=done.node.id,
            cert_pem=done.cert_pem,
            ca_bundle_pem=self.ca.bundle_pem,
            coordinators=await self._all_agent_endpoints(),
        )

    def _enroller(self) -> Enroller:
        if self._enroll is None:
            if not isinstance(self.tokens.store, StoreTokenStore):
                raise TypeError("enrollment needs the join tokens in the cluster store")
            self._enroll = Enroller(
                state=self.state,
                tokens=self.tokens,
                token_table=self.tokens.store.table,
                ca=self.ca,
                clock=self.clock,
            )
        return self._enroll

    async def _all_agent_endpoints(self) -> list[str]:
        """This coordinator's endpoints, then every registered coordinator's. The registry is
        listed at most once per ``ENDPOINTS_TTL_S`` (not once per enrollment)."""
        from cloudless.coordinator.state.coordinators import known_coordinators

        async with self._endpoints_lock:
            now = self.clock.monotonic()
            if self._others is None or now - self._others[0] >= self.ENDPOINTS_TTL_S:
                try:
                    others = [c.agent for c in await known_coordinators(self.state.store)]
                except Exception:
                    others = [] if self._others is None else self._others[1]
                self._others = (now, others)
        return list(dict.fromkeys([*self.agent_endpoints(), *self._others[1]]))

    async def _refused(self, message: str) -> None:
        """A security refusal: logged, and recorded in the event stream."""
        security_log.warning(message)
        await self.events.emit("security", message)

    # ---- control ---------------------------------------------------------------------------

    async def _authorize_node(self, context: grpc.aio.ServicerContext) -> str:
        decision = self.authorizer.authorize(peer_certificate(context), expected_kind=CertKind.NODE)
        if not decision.allowed:
            await self._refused(f"agent call from {context.peer()} refused: {decision.reason}")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, decision.reason)
        assert decision.identity is not None
        return decision.identity.name

    async def Renew(
        self, request: pb.RenewRequest, context: grpc.aio.ServicerContext
    ) -> pb.RenewResponse:
        node_id = await self._authorize_node(context)
        try:  # signing with the root key takes milliseconds: off the event loop
            cert = await asyncio.to_thread(
                self.ca.sign_csr,
                request.csr_pem,
                SpiffeId.node(node_id, self.ca.trust_domain),
                CertKind.NODE,
            )
        except CloudlessError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise
        await self.events.emit("node", f"node {node_id} renewed its certificate", node=node_id)
        return pb.RenewResponse(cert_pem=cert, ca_bundle_pem=self.ca.bundle_pem)

    async def StoreProxy(
        self, request: pb.StoreProxyRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreProxyResponse:
        """The object store's keys for a storage or gateway node (``objectstore.store_proxy``:
        what a node may read and write is checked there, a refusal is PERMISSION_DENIED)."""
        from cloudless.objectstore import store_proxy
        from cloudless.objectstore.s3.iam import reveal
        from cloudless.security.secretbox import SecretBox

        node_id = await self._authorize_node(context)
        box = SecretBox(self.ca.secrets_key)
        try:
            body = store_proxy.decode(request.request_json)
            answer = await store_proxy.serve(
                self.state.store, node_id, body, functools.partial(reveal, box)
            )
        except store_proxy.ProxyRefused as e:
            await self._refused(f"node {node_id}: {e}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            raise
        except (ValueError, KeyError, TypeError) as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"store proxy request: {e}")
            raise
        return pb.StoreProxyResponse(response_json=store_proxy.encode(answer))

    async def IssueWorkloadIdentity(
        self, request: pb.WorkloadIdentityRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkloadIdentityResponse:
        """A replica's SVID, for the agent of the node it is assigned to (``security.svid``)."""
        node_id = await self._authorize_node(context)
        rec = await self.state.replicas.get(replica_name(request.workload, request.replica_id))
        why = svid.issuance_refusal(
            node_id, request.workload, request.replica_id, rec.value if rec else None
        )
        if why is not None:
            await self._refused(f"workload identity for node {node_id} refused: {why}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        try:
            cert = await asyncio.to_thread(
                functools.partial(
                    self.ca.sign_csr,
                    request.csr_pem,
                    svid.workload_identity(request.replica_id, self.ca.trust_domain),
                    CertKind.WORKLOAD,
                    ttl_seconds=svid.clamp_ttl(request.ttl_seconds),
                    common_name=request.workload,
                )
            )
        except CloudlessError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: {e}")
            raise
        leaf = x509.load_pem_x509_certificate(cert)
        return pb.WorkloadIdentityResponse(
            cert_pem=cert,
            ca_bundle_pem=self.ca.bundle_pem,
            expires_at=leaf.not_valid_after_utc.timestamp(),
        )

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        """Authenticate the node, then serve its session (``AgentSessions``) over the call."""
        node_id = await self._authorize_node(context)
        await serve_connect(context, node_id, self.sessions.serve)
