"""``cloudless agent``: one data-plane process.

Enrolls once (token + CSR; key and certificate kept with 0600 permissions), then runs, in one
TaskGroup: the container runtime's loop, the supervisor (converging containers on the last
assignment, which is persisted, so work continues while the coordinator is unreachable), the
resource monitor, the link to the coordinator, certificate renewal (at 2/3 of the
certificate's lifetime, with jitter, without a restart) and, when storage is enabled, the
object-store node with its S3 gateway (``cloudless.agent.storage``).

Leaving (``request_leave``: ``cloudless agent leave``, SIGTERM with ``--leave-on-stop``): the
agent announces it (``Leave``), keeps running what it holds until the coordinator's set no
longer holds it (each replica is stopped there once its replacement is ready elsewhere) or
until the deadline, stops what is left, says goodbye without a hold and ``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cloudless.agent import volume_quota
from cloudless.agent.facts import detect_facts
from cloudless.agent.identity import AgentIdentity, channel_options, enroll
from cloudless.agent.link import AssignmentFile, Link, Sample
from cloudless.agent.monitor import ResourceMonitor
from cloudless.agent.network import AgentNetwork, node_key_dir
from cloudless.agent.power import read_battery, watch_battery
from cloudless.agent.restart_ledger import RestartLedger
from cloudless.agent.supervisor import Supervisor
from cloudless.agent.telemetry import AgentTelemetry, agent_tls_context
from cloudless.agent.usage import UsageSampler
from cloudless.agent.workload_identity import WorkloadIdentities
from cloudless.api.convert import resources_to_pb
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.api.gen.cloudlessapi import agent_pb2_grpc as pbg
from cloudless.lib.clock import Clock, SystemClock
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula_keys import NodeKey
from cloudless.objectstore.service import StorageConfig, StorageService
from cloudless.observability.http import parse_listen, serve_metrics
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.security.identity import SpiffeId
from cloudless.security.keys import make_csr, new_private_key
from cloudless.security.rotation import renewal_due

log = logging.getLogger("cloudless.agent")


@dataclass
class AgentConfig:
    data_dir: Path
    join: str = ""  # coordinator API URL, for enrollment
    token: str = ""
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    region: str = ""
    zone: str = ""
    address: str = ""
    public: bool = False
    cost_per_hour: float = 0.0
    capacity_override: Resources | None = None
    monitor_interval_s: float = 1.0
    # On a clean stop (cancellation), ask the coordinator to hold the node this long
    # (``Goodbye``); 0 says nothing, so the node is judged as if the agent had died.
    restart_hold_s: float = 0.0
    # "HOST:PORT": serve /metrics there in plain HTTP (bind it where only the operator's
    # Prometheus reaches); "" serves none. metrics_tls: mutual TLS instead, with the node's
    # certificate; the scraper must present a certificate from the cluster's CA.
    metrics_listen: str = ""
    metrics_tls: bool = False
    # Container networking when the coordinator sends a network (its own namespace, address
    # and DNS per container); False keeps containers on the device's network regardless.
    container_network: bool = True
    netns_prefix: str = "cl-"  # the containers' network namespaces: <prefix><replica id>
    # The object-store node (storage or S3 gateway) this agent runs; None runs none.
    storage: StorageConfig | None = None
    # Each replica's own SVID under <data_dir>/identities, mounted at /run/cloudless/identity
    # (``security.svid``); its lifetime, within the coordinator's 1 min .. 1 day.
    workload_identity: bool = True
    workload_identity_ttl_s: int = 3600
    # Owner-reserved hours (``cloudless.model.departure`` week bins): no work then.
    reserved_hours: frozenset[int] = frozenset()
    # On SIGTERM, leave (move replicas away first) instead of a plain stop.
    leave_on_stop: bool = False
    leave_deadline_s: float = 300.0
    # Leave when on battery at or below this percentage (``agent.power``); 0: never.
    leave_below_battery_pct: float = 0.0
    # Hold volumes with a size hint to it (loop-mounted ext4 images, where this node can:
    # ``agent.volume_quota``); False only reports their usage against it.
    volume_quota: bool = True


LEAVE_FILE = "leave.json"  # written by ``cloudless agent leave`` before it signals the agent
PID_FILE = "agent.pid"


class _Left(Exception):
    """Ends ``Agent.run``'s task group once the agent has left."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        runtime: ContainerRuntime,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        monitor: ResourceMonitor | None = None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.monitor = monitor or ResourceMonitor(
            str(config.data_dir), clock=self.clock, override=config.capacity_override
        )
        self.identity: AgentIdentity | None = None
        self.link: Link | None = None
        self.supervisor: Supervisor | None = None
        self.network: AgentNetwork | None = None
        self._nebula_pub: str | None = None
        self._metrics_tls: ssl.SSLContext | None = None
        self.storage: StorageService | None = None
        self._renew_now = asyncio.Event()  # the coordinator asked for a renewal (ack)
        self.identities: WorkloadIdentities | None = None
        self._leave = asyncio.Event()
        self._leave_args: tuple[float, str] = (config.leave_deadline_s, "agent leaving")
        self.left = False

    def facts(self) -> pb.NodeFacts:
        c = self.config
        d = detect_facts()
        s = self.monitor.latest or self.monitor.sample()
        labels = dict(c.labels)
        if c.region:
            labels.setdefault("region", c.region)
        if c.zone:
            labels.setdefault("zone", c.zone)
        return pb.NodeFacts(
            hostname=d.hostname,
            arch=d.arch,
            os=d.os,
            kernel=d.kernel,
            cpu_cores=d.cpu_cores,
            device_class=d.device_class,
            capacity=resources_to_pb(self.monitor.capacity(s)),
            allocatable=resources_to_pb(self.monitor.allocatable(s)),
            labels=labels,
            region=c.region,
            zone=c.zone,
            address=c.address,
            public=c.public,
            cost_per_hour=c.cost_per_hour,
            metrics_address=self.metrics_address(),
            reserved_hours=sorted(c.reserved_hours),
            nebula_public_key=self.nebula_public_key(),
        )

    def nebula_public_key(self) -> str:
        """The node's own Nebula public key (made once; the private key stays in the data
        dir), or "" without container networking or when it cannot be made (logged)."""
        if not self.config.container_network:
            return ""
        if self._nebula_pub is None:
            try:
                self._nebula_pub = NodeKey(node_key_dir(self.config.data_dir)).ensure()
            except (OSError, NetworkEdgeError) as e:
                log.warning("no Nebula key of its own: %s", e)
                return ""
        return self._nebula_pub

    def metrics_address(self) -> str:
        """Where this agent serves ``/metrics``, as advertised to the coordinator: the
        listen address, with the node's address in place of a wildcard host."""
        c = self.config
        if not c.metrics_listen:
            return ""
        host, port = parse_listen(c.metrics_listen)
        if host in ("0.0.0.0", "::", ""):
            host = c.address or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if c.metrics_tls else 'http'}://{host}:{port}"

    def sample(self) -> Sample:
        s = self.monitor.latest
        if s is None:
            return Sample(Resources(), NodeConditions())
        return Sample(s.usage(), self.monitor.conditions(s))

    async def ensure_identity(self) -> AgentIdentity:
        ident = AgentIdentity.load(self.config.data_dir)
        if ident is not None:
            return ident
        c = self.config
        if not c.join or not c.token:
            raise SystemExit(
                f"cloudless agent: not enrolled yet ({c.data_dir} holds no identity): pass "
                "--join https://COORDINATOR:8443 --token TOKEN"
            )
        ident = await enroll(c.join, c.token, node_name=c.name or "node", facts=self.facts())
        ident.save(c.data_dir)
        log.info("enrolled as node %s", ident.node_id)
        return ident

    async def run(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.monitor.sample()
        self.identity = await self.ensure_identity()
        assignments = AssignmentFile(self.config.data_dir)
        link_ref: list[Link] = []
        if self.config.container_network:
            self.network = AgentNetwork(
                self.config.data_dir,
                self.identity.node_id,
                public=self.config.public,
                clock=self.clock,
                live_containers=self._live_containers,
                netns_prefix=self.config.netns_prefix,
            )
            # the persisted network first: adopted and restarted replicas wait for it
            self.network.update(assignments.load_network())
        self.identities = (
            WorkloadIdentities(
                self.config.data_dir / "identities",
                self.issue_workload_identity,
                self.clock,
                self.rng,
                trust_domain=self.identity.trust_domain,
                ttl_s=self.config.workload_identity_ttl_s,
            )
            if self.config.workload_identity
            else None
        )
        volume_store = (
            volume_quota.volume_store()
            if self.config.volume_quota
            else volume_quota.PlainVolumes("quotas are off on this agent (--no-volume-quota)")
        )
        if volume_store.unsupported:
            log.info("volume size hints are reported, not enforced: %s", volume_store.unsupported)
        self.supervisor = Supervisor(
            self.runtime,
            self.clock,
            lambda: link_ref[0].on_change() if link_ref else None,
            advertise=self.config.address,
            volumes_root=self.config.data_dir / "volumes",
            volume_store=volume_store,
            secrets_root=self.config.data_dir / "secrets",  # a tmpfs, mounted on first use
            network=self.network,
            identities=self.identities,
            ledger=RestartLedger(self.config.data_dir),
        )
        usage = UsageSampler(self.runtime, self.clock, lambda: self.link_interval())
        self.link = Link(
            self.identity,
            self.supervisor,
            self.runtime,
            self.facts,
            self.sample,
            self.clock,
            self.rng,
            assignments,
            goodbye_hold_s=self.config.restart_hold_s,
            usage=usage,
            network=self.network.update if self.network is not None else None,
            services_update=self.network.update_services if self.network is not None else None,
            network_state=(
                self.network.describe if self.network is not None else lambda: "off: disabled"
            ),
            overlay=self.network.overlay_report if self.network is not None else lambda: None,
        )
        link_ref.append(self.link)
        ident = self.identity
        ids = self.identities

        def identity_changed() -> None:
            ident.save(self.config.data_dir)
            if ids is not None:
                ids.renew_all()  # new trust bundle (root rotation): into every container

        self.link.on_identity_change = identity_changed
        self.link.on_renew_requested = self._renew_now.set
        pid = self.config.data_dir / PID_FILE
        pid.write_text(f"{os.getpid()}\n")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.runtime.run())
                tg.create_task(self.supervisor.run(assignments.load()))
                tg.create_task(self.monitor.run(self.config.monitor_interval_s))
                tg.create_task(self.link.run())
                tg.create_task(usage.run())
                tg.create_task(self._renewal())
                tg.create_task(self._leaving())
                if self.config.leave_below_battery_pct > 0:
                    tg.create_task(self._battery_watch())
                if self.network is not None:
                    tg.create_task(self.network.run())
                if self.identities is not None:
                    tg.create_task(self.identities.run())
                if self.config.metrics_listen:
                    tg.create_task(self._serve_metrics())
                if self.config.storage is not None:
                    tg.create_task(self._storage(self.config.storage))
        except* _Left:
            self.left = True
        finally:
            pid.unlink(missing_ok=True)

    async def _storage(self, cfg: StorageConfig) -> None:
        """The object-store node until cancelled (``cloudless.agent.storage``)."""
        from cloudless.agent.storage import CoordinatorSend, node_tls
        from cloudless.objectstore.store_proxy import ProxyStore

        assert self.identity is not None and self.link is not None
        link = self.link
        send = CoordinatorSend(self.identity, link.coordinator)
        net = self.network
        self.storage = StorageService(
            cfg,
            node_tls(self.identity),
            ProxyStore(send),
            self.clock,
            gateway=net.gateway if net is not None else lambda: None,
        )
        try:
            await self.storage.run()
        finally:
            await send.close()

    async def _live_containers(self) -> set[str]:
        return {st.id for st in await self.runtime.list_containers()}

    def link_interval(self) -> float:
        """The heartbeat interval the coordinators asked for (usage is sampled as often)."""
        return self.link.interval if self.link is not None else 2.0

    def request_leave(self, deadline_s: float | None = None, reason: str = "") -> None:
        """Leave the cluster: replicas move away first (see the module docstring)."""
        self._leave_args = (
            self.config.leave_deadline_s if deadline_s is None else deadline_s,
            reason or "agent leaving",
        )
        self._leave.set()

    def leave_requested_by_file(self) -> bool:
        """SIGTERM: leave if ``cloudless agent leave`` asked (its file) or ``leave_on_stop``;
        True if a leave started (the caller then does not cancel the agent)."""
        f = self.config.data_dir / LEAVE_FILE
        if f.exists():
            try:
                ask = json.loads(f.read_text())
                self.request_leave(float(ask.get("deadline_s", 300.0)), str(ask.get("reason", "")))
            except (OSError, ValueError, TypeError) as e:
                log.warning("%s unreadable (%s): leaving with the defaults", f, e)
                self.request_leave()
            f.unlink(missing_ok=True)
            return True
        if self.config.leave_on_stop:
            self.request_leave(reason="agent stopping (--leave-on-stop)")
            return True
        return False

    LEAVE_POLL_S = 0.1

    async def _battery_watch(self) -> None:
        await watch_battery(
            self.clock,
            lambda: asyncio.to_thread(read_battery),
            self.config.leave_below_battery_pct,
            lambda reason: self.request_leave(reason=reason),
        )

    async def _leaving(self) -> None:
        await self._leave.wait()
        assert self.link is not None and self.supervisor is not None
        deadline_s, reason = self._leave_args
        log.info("leaving (%s): moving replicas away within %.0fs", reason, deadline_s)
        self.link.announce_leave(deadline_s, reason)
        until = self.clock.monotonic() + deadline_s
        while self.supervisor.workers and self.clock.monotonic() < until:
            await self.clock.sleep(self.LEAVE_POLL_S)
        if self.supervisor.workers:
            log.warning(
                "leave deadline passed with %d replica(s) here: stopping them",
                len(self.supervisor.workers),
            )
        self.supervisor.assign([])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30.0):
                await self.supervisor.idle()
        await self.link.say_goodbye(f"left: {reason}")
        log.info("left the cluster")
        raise _Left()

    async def _serve_metrics(self) -> None:
        """``/metrics`` until cancelled; the TLS context follows certificate renewals."""
        assert self.supervisor is not None
        c = self.config
        ident_dir = AgentIdentity.dir(c.data_dir)
        tele = AgentTelemetry(
            self.runtime,
            self.supervisor.statuses,
            {"node": ident_dir / "node.crt", "ca": ident_dir / "ca.pem"},
            storage=lambda: self.storage.figures() if self.storage is not None else None,
        )
        host, port = parse_listen(c.metrics_listen)
        self._metrics_tls = agent_tls_context(ident_dir) if c.metrics_tls else None
        runner = await serve_metrics(tele.page, host, port, self._metrics_tls)
        log.info("serving metrics at %s", self.metrics_address())
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def _renewal(self) -> None:
        """Renew at the time drawn once per certificate (2/3 of its life, with jitter)."""
        assert self.identity is not None and self.link is not None
        while True:
            d = renewal_due(self.identity.cert_pem, self.clock.now(), self.rng)
            if d.expired:
                log.error("certificate expired: %s", d.reason)
                return
            while self.clock.now() < d.renew_at and not self._renew_now.is_set():
                await self._sleep_or_renew_request(
                    min(3600.0, max(1.0, d.renew_at - self.clock.now()))
                )
            if self._renew_now.is_set():
                # asked by the coordinator (a root rotation asks every agent at once): spread
                # the renewals over one heartbeat interval
                await self.clock.sleep(self.rng.uniform(0.0, self.link.interval))
            self._renew_now.clear()
            try:
                await self.renew()
            except (grpc.aio.AioRpcError, OSError) as e:
                log.warning("certificate renewal failed, retrying in 60s: %s", e)
                await self.clock.sleep(60)

    async def issue_workload_identity(
        self, workload: str, replica_id: str, csr: bytes, ttl_s: int
    ) -> tuple[bytes, bytes]:
        """Ask a coordinator for a replica's SVID (``IssueWorkloadIdentity``)."""
        ident = self.identity
        assert ident is not None
        if self.link is None or not self.link.connected.is_set():
            # offline: do not hold a container's start; the identity follows (retried)
            raise ConnectionError("no coordinator connection")
        target = self.link.coordinator() or ident.coordinators[0]
        request = pb.WorkloadIdentityRequest(
            replica_id=replica_id, workload=workload, csr_pem=csr, ttl_seconds=ttl_s
        )
        async with grpc.aio.secure_channel(
            target, ident.channel_credentials(), options=channel_options()
        ) as ch:
            resp = await pbg.AgentControlStub(ch).IssueWorkloadIdentity(request, timeout=10)
        return resp.cert_pem, resp.ca_bundle_pem

    async def _sleep_or_renew_request(self, seconds: float) -> None:
        """Sleep on the clock, or less if the coordinator asks for a renewal (root rotation)."""
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        asked = asyncio.ensure_future(self._renew_now.wait())
        try:
            await asyncio.wait([sleeper, asked], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            asked.cancel()
            await asyncio.gather(sleeper, asked, return_exceptions=True)

    async def renew(self) -> None:
        """Renew now: a fresh key, a CSR for the same identity, new files. The open stream is
        kept (the old certificate still has a third of its life); the next connection uses
        the new certificate."""
        ident = self.identity
        assert ident is not None and self.link is not None
        key = new_private_key()
        csr = make_csr(key, SpiffeId.node(ident.node_id, ident.trust_domain))
        target = self.link.coordinator() or ident.coordinators[0]
        async with grpc.aio.secure_channel(
            target, ident.channel_credentials(), options=channel_options()
        ) as ch:
            resp = await pbg.AgentControlStub(ch).Renew(pb.RenewRequest(csr_pem=csr), timeout=30)
        ident.key_pem, ident.cert_pem = key, resp.cert_pem
        if resp.ca_bundle_pem:
            ident.ca_pem = resp.ca_bundle_pem
        ident.save(self.config.data_dir)
        if self._metrics_tls is not None:
            d = AgentIdentity.dir(self.config.data_dir)
            self._metrics_tls.load_cert_chain(str(d / "node.crt"), str(d / "node.key"))
        self.link.on_change()  # the next heartbeat, sent now, reports the new issuer
        if self.identities is not None:
            self.identities.renew_all()  # from the root that issued ours (root rotation)
        log.info("certificate renewed")
