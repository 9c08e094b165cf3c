"""``cloudless coordinator``: one control-plane process.

Start-up order: data dirs, CA, token manager, membership, scheduler, store (embedded etcd
member, supervised); open the store and wait for a leader (``leader_wait_s``, then a clear
error); bootstrap the cluster identity if asked; then serve the agent gRPC API and the user
HTTPS API. Leader-only work (the agent plane, the reconciler, the event compactor) runs while
the election says this coordinator leads, each write fenced by the election.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random

import grpc
from aiohttp import web

from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.churn.keeper import AvailabilityKeeper
from cloudless.churn.route import StrategyPlacer
from cloudless.churn.target import AvailabilityPlacer
from cloudless.clusterops.etcd_tls import EtcdTlsFollower
from cloudless.clusterops.rotation_runner import AgentTrust, RootRotation
from cloudless.coordinator.agentapi.service import AgentApi
from cloudless.coordinator.eventlog.compactor import EventCompactor
from cloudless.coordinator.eventlog.recorder import EventRecorder
from cloudless.coordinator.loops.leader_watch import GrpcLink, LeaderWatch, leader_link_options
from cloudless.coordinator.loops.reconcile_loop import Reconciler
from cloudless.coordinator.loops.secret_cache import SecretCache
from cloudless.coordinator.state.cluster import EVENTS_PREFIX, ClusterState
from cloudless.coordinator.state.coordinators import (
    CoordinatorInfo,
    etcd_endpoints,
    known_coordinators,
    register,
)
from cloudless.coordinator.userapi.app import IDENTITY, UserApi, server_ssl_context
from cloudless.coordinator.userapi.console.routes import Console
from cloudless.coordinator.userapi.errors import JsonErrorRunner
from cloudless.coordinator.userapi.telemetry import CoordinatorTelemetry
from cloudless.coordinator.wiring.agent_plane import AgentPlane
from cloudless.coordinator.wiring.config import CoordinatorConfig, write_private
from cloudless.coordinator.wiring.joining import request_join, write_ca
from cloudless.coordinator.wiring.leadership import LeaderLoop, Leadership
from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.ids import IdSource, RandomIds
from cloudless.model.workload import WorkloadSpec
from cloudless.network.controller import NetworkController
from cloudless.network.lighthouse import network_publisher
from cloudless.network.observer import OverlayObserver
from cloudless.observability.http import parse_listen, serve_metrics
from cloudless.observability.store import MeasuredStore
from cloudless.scheduler.scheduler import Scheduler
from cloudless.security.authz import Authorizer
from cloudless.security.ca import CertificateAuthority
from cloudless.security.identity import CertKind, SpiffeId
from cloudless.security.revocation import RevocationList
from cloudless.security.secretbox import SecretBox
from cloudless.security.tls import ReloadableServerContext, ReloadableServerCredentials
from cloudless.security.tokens import TokenManager
from cloudless.store.election import Election
from cloudless.store.errors import StoreError
from cloudless.store.fence import Fence
from cloudless.store.memory import MemoryStore
from cloudless.store.protocol import Store
from cloudless.store.tables.config import ClusterIdentity
from cloudless.store.tables.revocations import REVOCATIONS
from cloudless.store.tables.secrets import CONFIGS
from cloudless.store.tokens import StoreTokenStore
from cloudless.store.types import EventType

log = logging.getLogger("cloudless.coordinator")


class StartupError(CloudlessError):
    code = "startup"


class Coordinator:
    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        clock: Clock | None = None,
        ids: IdSource | None = None,
        rng: random.Random | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.ids = ids or RandomIds()
        self.rng = rng or random.Random()
        self._store = store
        self.revocations = RevocationList()
        self.ready = asyncio.Event()
        self.etcd: object | None = None
        self._join_etcd: list[str] = []
        self.coordinators: list[CoordinatorInfo] = []
        self.ca: CertificateAuthority
        self.store: Store
        self.telemetry: CoordinatorTelemetry
        self.state: ClusterState
        self.election: Election
        self.agents: AgentPlane
        self.events: EventRecorder
        self.network: NetworkController | None = None
        self.rotation: RootRotation
        self._grpc_creds: list[ReloadableServerCredentials] = []
        self._https: ReloadableServerContext | None = None
        self.availability: AvailabilityKeeper

    # ---- pieces ----------------------------------------------------------------------------

    def _load_ca(self) -> CertificateAuthority:
        c = self.config
        if (c.ca_dir / "ca.key").exists():
            return CertificateAuthority.load(c.ca_dir, clock=self.clock)
        if c.bootstrap:
            log.info("creating the cluster CA (RSA-%d) in %s", c.root_key_size, c.ca_dir)
            return CertificateAuthority.init(
                c.ca_dir,
                trust_domain=c.trust_domain,
                clock=self.clock,
                root_key_size=c.root_key_size,
            )
        raise StartupError(
            f"no CA in {c.ca_dir}: start the first coordinator with --bootstrap, or join an "
            "existing cluster with --join URL --token TOKEN"
        )

    def _issue_own_certs(self) -> None:
        c = self.config
        ips = sorted({c.host, "127.0.0.1"})
        sid = SpiffeId.service(f"coordinator-{c.name}", c.trust_domain)
        key, cert = self.ca.issue(sid, CertKind.SERVICE, dns_names=("localhost",), ip_addresses=ips)
        write_private(c.tls_dir / "coordinator.key", key)
        write_private(c.tls_dir / "coordinator.crt", cert)
        write_private(c.tls_dir / "ca.pem", self.ca.bundle_pem)

    def _reload_tls(self) -> None:
        """Serve the current certificate and trust bundle from the next handshake on (after a
        root rotation step or a renewal of our own certificate); open connections stay."""
        c = self.config
        write_private(c.tls_dir / "ca.pem", self.ca.bundle_pem)
        key = (c.tls_dir / "coordinator.key").read_bytes()
        cert = (c.tls_dir / "coordinator.crt").read_bytes()
        for creds in self._grpc_creds:
            creds.update(cert_pem=cert, key_pem=key, bundle_pem=self.ca.bundle_pem)
        if self._https is not None:
            self._https.reload()

    def _write_admin_config(self) -> None:
        c = self.config
        if (c.admin_dir / "config.json").exists():
            return
        key, cert = self.ca.issue(SpiffeId.user("admin", c.trust_domain), CertKind.USER)
        write_private(c.admin_dir / "admin.key", key)
        write_private(c.admin_dir / "admin.crt", cert)
        write_private(c.admin_dir / "ca.pem", self.ca.bundle_pem)
        cfg = {"servers": [c.api_url], "ca": "ca.pem", "cert": "admin.crt", "key": "admin.key"}
        write_private(c.admin_dir / "config.json", json.dumps(cfg, indent=2).encode())
        log.info("admin client config written to %s", c.admin_dir / "config.json")

    async def _open_store(self) -> Store:
        if self._store is not None:
            return self._store
        if self.config.store == "memory":
            return MemoryStore(clock=self.clock)
        from cloudless.coordinator.wiring.embedded_etcd import (
            join_embedded_etcd,
            start_embedded_etcd,
        )

        c = self.config
        fresh = not c.etcd_dir.exists() or not any(c.etcd_dir.iterdir())
        if self._join_etcd and fresh:
            member, store = await join_embedded_etcd(c, self.ca, self._join_etcd)
        else:
            member, store = await start_embedded_etcd(c, self.ca)
        self.etcd = member
        return store

    def _etcd_tls(self, store: Store) -> EtcdTlsFollower | None:
        """The embedded etcd member's TLS follows root rotations (with an embedded member
        and ``etcd_follows_rotation``)."""
        from cloudless.coordinator.wiring.embedded_etcd import etcd_files, issue_etcd_certs
        from cloudless.store.etcd import EtcdStore
        from cloudless.store.etcd_process import EtcdMember

        if not self.config.etcd_follows_rotation:
            return None
        if not isinstance(self.etcd, EtcdMember) or not isinstance(store, EtcdStore):
            return None
        return EtcdTlsFollower(
            self.ca,
            etcd_files(self.config),
            self.etcd,
            store,
            lambda: issue_etcd_certs(self.config, self.ca),
        )

    def leader_info(self) -> dict[str, str]:
        raw = self.election.leader() if hasattr(self, "election") else None
        if not raw:
            return {}
        try:
            info = json.loads(raw)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    # ---- run -------------------------------------------------------------------------------

    async def run(self) -> None:
        c = self.config
        for d in (c.data_dir, c.tls_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if c.join and not (c.ca_dir / "ca.key").exists():
            if not c.join_token:
                raise StartupError("--join needs --token: a coordinator-join token")
            answer = await request_join(c.join, c.join_token, c.name)
            write_ca(c.ca_dir, answer["ca"])
            self._join_etcd = [str(e) for e in answer["etcd_endpoints"]]
            log.info("joined cluster via %s; etcd members at %s", c.join, self._join_etcd)
        self.ca = self._load_ca()
        self._issue_own_certs()
        raw_store = await self._open_store()
        self.store = MeasuredStore(raw_store)
        self.state = ClusterState(self.store)
        self.telemetry = CoordinatorTelemetry(
            self.state,
            {"ca": c.tls_dir / "ca.pem", "coordinator": c.tls_dir / "coordinator.crt"},
        )
        tokens = TokenManager(
            self.ca, StoreTokenStore(self.store), self.clock, bcrypt_cost=c.bcrypt_cost
        )
        authorizer = Authorizer(
            lambda: self.ca.trust_bundle,  # follows a root rotation
            trust_domain=c.trust_domain,
            revocations=self.revocations,
            clock=self.clock,
        )
        self.events = EventRecorder(self.state, self.clock)
        self.agents = AgentPlane(self.state, self.clock, self.events, c.membership)
        dispatcher = self.agents.dispatcher
        dispatcher.trust = AgentTrust(self.store, self.ca, self.clock)
        self.rotation = RootRotation(
            self.store,
            self.ca,
            c.name,
            self.clock,
            reissue_own=self._issue_own_certs,
            reload=self._reload_tls,
            own_certificate=lambda: (c.tls_dir / "coordinator.crt").read_bytes(),
            ids=self.ids,
            rng=self.rng,
            emit=lambda message: self.events.emit("ca", message),
            etcd=self._etcd_tls(raw_store),
        )
        self.secret_cache = SecretCache(
            self.store, SecretBox(self.ca.secrets_key), dispatcher.secrets_changed, self.clock
        )
        self.config_cache = SecretCache(
            self.store,
            SecretBox(self.ca.secrets_key),
            dispatcher.secrets_changed,
            self.clock,
            table=CONFIGS,
        )
        secrets, configs = self.secret_cache, self.config_cache
        # a config's key: its own table first, then one left in the secrets table
        dispatcher.secret_values = lambda key: (
            v if (v := configs.get(key)) is not None else secrets.get(key)
        )
        scheduler = Scheduler(c.scheduler)
        availability = AvailabilityPlacer(scheduler)
        self.availability = AvailabilityKeeper(
            self.store, self.state.nodes, self.clock, availability
        )
        reconciler = Reconciler(
            self.state, StrategyPlacer(scheduler, availability), self.ids, self.clock
        )
        self.network = (
            NetworkController(self.state, c.network.plan(), self.clock) if c.network else None
        )
        self.network_publisher, self.lighthouse = network_publisher(
            c.network,
            c.ca_dir,
            self.store,
            self.clock,
            dispatcher,
            joined=bool(c.join),
            coordinator=c.name,
        )
        self.overlay_observer = (
            OverlayObserver(
                self.store, c.network.plan(), self.clock, lambda: dispatcher.overlay_reports
            )
            if c.network
            else None
        )
        me = json.dumps({"api": c.api_url, "agent": c.agent_endpoint, "name": c.name})
        self.election = Election(self.store, me, ttl=c.election_ttl, clock=self.clock)

        def endpoints() -> list[str]:
            others = [i.agent for i in self.coordinators if i.agent != c.agent_endpoint]
            return [c.agent_endpoint, *others]

        def enroll_endpoints() -> list[str]:
            others = [i.enroll for i in self.coordinators if i.enroll != c.enroll_endpoint]
            return [c.enroll_endpoint, *others]

        agent_api = AgentApi(
            state=self.state,
            dispatcher=dispatcher,
            events=self.events,
            ca=self.ca,
            tokens=tokens,
            authorizer=authorizer,
            clock=self.clock,
            leader_address=lambda: self.leader_info().get("agent"),
            agent_endpoints=endpoints,
        )
        user_api = UserApi(
            state=self.state,
            fence=self.election.fence,
            recorder=self.events,
            live_nodes=self.agents.nodes,
            log_source=dispatcher.log_stream,
            network_states=dispatcher.network_states,
            live_usage=dispatcher,
            ca=self.ca,
            tokens=tokens,
            authorizer=authorizer,
            revocations=self.revocations,
            clock=self.clock,
            is_leader=self.election.is_leader,
            leader_api=lambda: self.leader_info().get("api"),
            agent_endpoints=endpoints,
            enroll_endpoints=enroll_endpoints,
            scheduler=Scheduler(self.config.scheduler),
        )
        user_api.network_config = c.network
        user_api.rotation = self.rotation
        try:
            async with asyncio.TaskGroup() as tg:
                if self.etcd is not None:
                    tg.create_task(self.etcd.run())  # type: ignore[attr-defined]
                if isinstance(raw_store, MemoryStore):
                    tg.create_task(raw_store.run())  # expire leases on time
                tg.create_task(self.election.run())
                await self._wait_for_leader()
                if c.bootstrap:
                    from cloudless.store.membership import ensure_identity

                    await ensure_identity(
                        self.store,
                        ClusterIdentity(
                            self.ids.new_id("cl-"), c.trust_domain, self.clock.now(), self.ca.digest
                        ),
                    )
                    self._write_admin_config()
                etcd_ep = f"{c.host}:{c.etcd_client_port}" if c.store == "etcd" else ""
                await self._register(
                    CoordinatorInfo(
                        c.name, c.api_url, c.agent_endpoint, c.enroll_endpoint, etcd_ep
                    ),
                )
                tg.create_task(self._refresh_coordinators(raw_store))
                tg.create_task(self._sync_revocations())
                tg.create_task(self.rotation.follow())
                tg.create_task(self.rotation.keep_own_certificate())
                tg.create_task(self.secret_cache.run())
                tg.create_task(self.config_cache.run())
                tg.create_task(self._leadership(reconciler).run())
                if self.lighthouse is not None:
                    tg.create_task(self.lighthouse.run())
                tg.create_task(self._leader_watch().run())
                grpc_server = await self._serve_grpc(agent_api)
                runner = await self._serve_http(user_api)
                metrics_runner = await self._serve_metrics()
                log.info(
                    "coordinator %s serving: api %s, agents %s", c.name, c.api_url, c.agent_endpoint
                )
                self.ready.set()
                try:
                    await asyncio.Event().wait()
                finally:
                    await grpc_server.stop(grace=0.5)
                    await runner.cleanup()
                    if metrics_runner is not None:
                        await metrics_runner.cleanup()
        finally:
            with contextlib.suppress(Exception):
                await self.store.close()
            if self.etcd is not None:
                with contextlib.suppress(Exception):
                    await self.etcd.stop()  # type: ignore[attr-defined]

    def _leader_watch(self) -> LeaderWatch:
        """Followers hold a link to the leader's agent port and depose a leader whose link
        breaks for good (see ``leader_watch``), instead of waiting out its lease."""
        c = self.config

        def creds() -> grpc.ChannelCredentials:  # current files: they follow renewals
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.bundle_pem,
                private_key=(c.tls_dir / "coordinator.key").read_bytes(),
                certificate_chain=(c.tls_dir / "coordinator.crt").read_bytes(),
            )

        def agent_address(value: str) -> str | None:
            try:
                info = json.loads(value)
            except ValueError:
                return None
            agent = info.get("agent") if isinstance(info, dict) else None
            return agent if isinstance(agent, str) and agent else None

        return LeaderWatch(
            self.election,
            GrpcLink(creds, leader_link_options(c.keepalive)),
            agent_address,
            grace=c.leader_death_grace_s,
            clock=self.clock,
        )

    async def _register(self, info: CoordinatorInfo) -> None:
        """Register (an idempotent put), retrying while the store does not answer: a
        coordinator that restarts during another's failover meets an etcd election, and
        must wait it out rather than exit."""
        while True:
            try:
                await register(self.store, info)
                return
            except StoreError as e:
                log.warning("registering coordinator %s: %s; retrying", info.name, e)
                await self.clock.sleep(0.5)

    async def _wait_for_leader(self) -> None:
        deadline = self.clock.monotonic() + self.config.leader_wait_s
        while self.election.leader() is None:
            if self.clock.monotonic() > deadline:
                raise StartupError(
                    f"no coordinator leader within {self.config.leader_wait_s:.0f}s: the store "
                    "has no quorum (are enough coordinators running and reachable?)"
                )
            await self.clock.sleep(0.05)

    def _leadership(self, reconciler: Reconciler) -> Leadership:
        """The leader-only components, run while this coordinator leads."""
        loops: list[tuple[str, LeaderLoop]] = [
            ("agent plane", self.agents.lead),
            ("reconciler", reconciler.lead),
            ("event compactor", self._compact_events),
            ("root rotation", self.rotation.lead),
            ("availability history", self.availability.lead),
            ("object store events", self._storage_events),
        ]
        if self.network is not None:
            loops.append(("network", self.network.lead))
        if self.network_publisher is not None:
            loops.append(("network publisher", self.network_publisher.lead))
        if self.overlay_observer is not None:
            loops.append(("overlay observer", self.overlay_observer.lead))
        return Leadership(self.election, self.clock, loops, name=self.config.name)

    async def _storage_events(self, fence: Fence) -> None:
        from cloudless.objectstore.events import StoreEvents

        async def emit(kind: str, message: str, fields: dict[str, str]) -> None:
            await self.events.emit(kind, message, **fields)

        await StoreEvents(self.store, emit, self.clock).run()

    async def _compact_events(self, fence: Fence) -> None:
        await EventCompactor(
            self.store, EVENTS_PREFIX, self.config.events, self.clock, fence=fence
        ).run()

    async def _refresh_coordinators(self, raw_store: Store) -> None:
        """Keep ``coordinators`` current, and give the embedded etcd client every member's
        address (a coordinator starts knowing its own member and those it joined through:
        the first one knew only its own, and lost the store whenever that member restarted)."""
        from cloudless.store.etcd import EtcdStore

        own = f"{self.config.host}:{self.config.etcd_client_port}"
        while True:
            with contextlib.suppress(StoreError):
                self.coordinators = await known_coordinators(self.store)
                if isinstance(raw_store, EtcdStore) and self.etcd is not None:
                    if await raw_store.set_endpoints(etcd_endpoints(own, self.coordinators)):
                        log.info("etcd client endpoints: %s", ", ".join(raw_store.endpoints))
            await self.clock.sleep(2.0)

    async def _sync_revocations(self) -> None:
        table = REVOCATIONS.bind(self.store)
        while True:
            try:
                listing = await table.list()
                for rec in listing.records:
                    self._apply_revocation(rec.value)
                async for ev in table.watch(start_revision=listing.revision + 1):
                    if ev.type is EventType.PUT and ev.record is not None:
                        self._apply_revocation(ev.record.value)
            except StoreError as e:
                log.warning("revocation sync interrupted (%s); re-listing", e)
                await self.clock.sleep(0.5)

    def _apply_revocation(self, r: object) -> None:
        from cloudless.store.tables.revocations import Revocation

        assert isinstance(r, Revocation)
        if r.subject.startswith("spiffe://"):
            self.revocations.revoke_identity(
                SpiffeId.parse(r.subject), reason=r.reason, at=r.revoked_at
            )
        else:
            with contextlib.suppress(ValueError):
                self.revocations.revoke_serial(
                    int(r.subject, 16), reason=r.reason, at=r.revoked_at, expires_at=r.expires_at
                )

    async def _serve_grpc(self, api: AgentApi) -> grpc.aio.Server:
        c = self.config
        server = grpc.aio.server(options=c.keepalive.server_options())
        pbg.add_EnrollmentServicer_to_server(api, server)
        pbg.add_AgentControlServicer_to_server(api, server)
        key = (c.tls_dir / "coordinator.key").read_bytes()
        cert = (c.tls_dir / "coordinator.crt").read_bytes()
        mtls = ReloadableServerCredentials(cert, key, self.ca.bundle_pem)
        server_only = ReloadableServerCredentials(
            cert, key, self.ca.bundle_pem, require_client_auth=False
        )
        self._grpc_creds = [mtls, server_only]
        server.add_secure_port(f"{c.host}:{c.agent_port}", mtls.credentials())
        server.add_secure_port(f"{c.host}:{c.enroll_port}", server_only.credentials())
        await server.start()
        return server

    async def _serve_metrics(self) -> web.AppRunner | None:
        """The plain-HTTP ``/metrics`` listener, when the operator asked for one."""
        if not self.config.metrics_listen:
            return None
        try:
            host, port = parse_listen(self.config.metrics_listen)
        except ValueError as e:
            raise StartupError(f"--metrics-listen: {e}") from None
        return await serve_metrics(self.telemetry.page, host, port)

    async def _serve_http(self, api: UserApi) -> web.AppRunner:
        c = self.config
        self._https = ReloadableServerContext(
            lambda: server_ssl_context(
                str(c.tls_dir / "coordinator.crt"),
                str(c.tls_dir / "coordinator.key"),
                str(c.tls_dir / "ca.pem"),
            )
        )
        ctx = self._https.listening
        app = api.app()
        self.telemetry.install(app)

        async def explain(spec: WorkloadSpec) -> str:
            return (await api.explanation(spec, 5)).render()

        Console(
            state=self.state,
            clock=self.clock,
            revocations=self.revocations,
            identity_of=lambda request: request[IDENTITY].uri,
            explain=explain,
            logs=api.logs,
        ).install(app)
        runner = JsonErrorRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, c.host, c.api_port, ssl_context=ctx)
        await site.start()
        return runner
