"""The agent's link to the control plane: one long-lived ``Connect`` stream.

Up the stream go a ``Hello`` (facts and replica statuses), heartbeats every interval the
coordinator sets (and at once when a replica changes state), and log chunks. Down come the
full assignment set (pushed the moment it changes), heartbeat acks, log requests and
redirects to the leader. On any failure the link reconnects with exponential backoff and full
jitter, to the leader it was told about first, then to every known coordinator in turn.
The supervisor keeps running meanwhile; nothing here stops a container.

The stream is a ``cloudless.transport`` channel from the link's ``Dialer``: gRPC with the
node's certificate in the product, in memory in the simulator (the same code runs in both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudless.agent.identity import AgentIdentity, channel_options
from cloudless.agent.supervisor import Assigned, LocalStatus, Supervisor
from cloudless.agent.usage import UsageOutbox, UsageSampler
from cloudless.api.convert import conditions_to_pb, resources_to_pb
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.backoff import Backoff
from cloudless.lib.clock import Clock
from cloudless.lib.errors import CloudlessError, ValidationError
from cloudless.lib.first import first_of
from cloudless.model.node import NodeConditions
from cloudless.model.resources import Resources
from cloudless.model.usage import ReplicaUsage
from cloudless.model.workload import parse_workload
from cloudless.runtime.protocol import ContainerRuntime
from cloudless.security._files import write_private
from cloudless.security.bundle import trust_report
from cloudless.transport.channel import AgentEnd, ChannelError, Dialer, EndOfChannel
from cloudless.transport.grpc_channel import GrpcDialer

log = logging.getLogger("cloudless.agent.link")

VERSION = "0.1.0"
OVERLAY_RESEND_S = 30.0  # an unchanged overlay report is sent again this often


@dataclass(frozen=True)
class Sample:
    usage: Resources
    conditions: NodeConditions


def status_pb(s: LocalStatus, clock_now: float) -> pb.ReplicaStatus:
    return pb.ReplicaStatus(
        replica_id=s.replica_id,
        workload=s.workload,
        state=s.state.value,
        reason=s.reason,
        exit_code=s.exit_code or 0,
        has_exit_code=s.exit_code is not None,
        restarts=s.restarts,
        started_at=s.started_at,
        spec_version=s.spec_version,
        endpoint=s.endpoint,
        ready=s.ready,
        health=s.health,
        volume_bytes=s.volume_bytes,
        volume_quota=s.volume_quota,
        reports_ready=True,
    )


def usage_pb(u: ReplicaUsage) -> pb.ReplicaUsage:
    return pb.ReplicaUsage(
        replica_id=u.replica_id,
        cpu_millis=u.cpu_millis,
        memory_bytes=u.memory_bytes,
        memory_limit_bytes=u.memory_limit_bytes,
        disk_read_bps=u.disk_read_bps,
        disk_write_bps=u.disk_write_bps,
        net_rx_bps=u.net_rx_bps,
        net_tx_bps=u.net_tx_bps,
        pids=u.pids,
        sampled_at=u.at,
    )


def assignments_from_pb(msg: pb.Assignments) -> list[Assigned]:
    out = []
    for a in msg.replicas:
        try:
            spec = parse_workload(json.loads(a.spec_json), stored=True)
        except (ValueError, ValidationError) as e:
            log.error("ignoring assignment %s with a bad spec: %s", a.replica_id, e)
            continue
        out.append(
            Assigned(
                a.replica_id,
                a.workload,
                a.spec_version,
                spec,
                a.desired == "running",
                secrets=dict(a.secrets),
                drop_volumes=a.drop_volumes,
                trace=a.traceparent,
            )
        )
    return out


class AssignmentFile:
    """The last assignment set, persisted so a restarted agent carries on offline."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "assignments.bin"

    def save(self, msg: pb.Assignments) -> None:
        """Persist ``msg`` without secret values: those live in memory and on tmpfs only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if any(r.secrets for r in msg.replicas):
            msg = pb.Assignments.FromString(msg.SerializeToString())
            for r in msg.replicas:
                r.secrets.clear()
        write_private(self.path, msg.SerializeToString())

    def save_network(self, network: pb.NetworkConfig) -> None:
        """Replace the network config persisted with the last set (kept for a restart)."""
        msg = pb.Assignments()
        if self.path.exists():
            try:
                msg.ParseFromString(self.path.read_bytes())
            except Exception as e:  # a corrupt file must not stop the agent
                log.error("rewriting unreadable %s: %s", self.path, e)
                msg = pb.Assignments()
        msg.network.CopyFrom(network)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, msg.SerializeToString())

    def load(self) -> list[Assigned]:
        if not self.path.exists():
            return []
        msg = pb.Assignments()
        try:
            msg.ParseFromString(self.path.read_bytes())
        except Exception as e:  # a corrupt file must not stop the agent
            log.error("ignoring unreadable %s: %s", self.path, e)
            return []
        return assignments_from_pb(msg)

    def load_network(self) -> pb.NetworkConfig | None:
        """The network config persisted with the last set (None: none, or no file)."""
        if not self.path.exists():
            return None
        msg = pb.Assignments()
        try:
            msg.ParseFromString(self.path.read_bytes())
        except Exception:
            return None  # load() already says so
        return msg.network if msg.HasField("network") else None


class Link:
    def __init__(
        self,
        identity: AgentIdentity,
        supervisor: Supervisor,
        runtime: ContainerRuntime,
        facts: Callable[[], pb.NodeFacts],
        sample: Callable[[], Sample],
        clock: Clock,
        rng: random.Random,
        assignments: AssignmentFile,
        *,
        backoff: Backoff | None = None,
        server_name: str | None = None,
        goodbye_hold_s: float = 0.0,
        dialer: Dialer | None = None,
        network: Callable[[pb.NetworkConfig | None], None] | None = None,
        network_state: Callable[[], str] = lambda: "",
        overlay: Callable[[], pb.OverlayReport | None] = lambda: None,
        usage: UsageSampler | None = None,
        services_update: Callable[[pb.NetworkServicesUpdate], pb.NetworkConfig | None]
        | None = None,
    ) -> None:
        self.identity = identity
        self.network = network
        self.services_update = services_update
        self.network_state = network_state
        self.overlay = overlay
        self.usage = usage
        self.supervisor = supervisor
        self.runtime = runtime
        self.facts = facts
        self.sample = sample
        self.clock = clock
        self.rng = rng
        self.assignments = assignments
        self.backoff = backoff or Backoff(base=0.2, cap=5.0)
        self.server_name = server_name
        self.goodbye_hold_s = goodbye_hold_s
        self.dialer = dialer or GrpcDialer(
            identity.channel_credentials, channel_options(server_name)
        )
        #: Why the last session attempt failed ("" after a session that ended cleanly).
        self.last_failure = ""
        self.on_identity_change: Callable[[], None] | None = None
        self.on_renew_requested: Callable[[], None] | None = None
        self._trust_cache: tuple[bytes, bytes, list[str], str] | None = None
        # The coordinators' default until the first ack says otherwise: a new agent must not
        # heartbeat faster, nor give up on a busy coordinator sooner (silence_limit), than its
        # peers do.
        self.interval = 2.0
        self.leader_hint: str | None = None
        self.serving: str | None = None  # the coordinator of the open stream, while connected
        self.changed = asyncio.Event()
        self.connected = asyncio.Event()
        self.seq = 0
        self.last_rx = 0.0
        self._log_tasks: dict[str, asyncio.Task[None]] = {}
        self._renewed = asyncio.Event()
        # Set by ``announce_leave``: sent now and again on every new session until we go.
        self.leave: pb.Leave | None = None
        self._outbox: asyncio.Queue[pb.AgentMessage] | None = None
        self._said_goodbye: asyncio.Event | None = None

    def on_change(self) -> None:
        self.changed.set()

    def _trust_report(self) -> tuple[list[str], str]:
        """The digests of the trusted roots and of the one that signed our certificate,
        recomputed only when the certificate or the bundle changes."""
        cert, ca = self.identity.cert_pem, self.identity.ca_pem
        c = self._trust_cache
        if c is None or c[0] is not cert or c[1] is not ca:
            try:
                trusted, issuer = trust_report(cert, ca)
            except (ValueError, CloudlessError):
                trusted, issuer = [], ""
            c = self._trust_cache = (cert, ca, trusted, issuer)
        return c[2], c[3]

    def reconnect(self) -> None:
        """Drop the current stream (new credentials after renewal)."""
        self._renewed.set()

    def coordinator(self) -> str | None:
        """Where a request to the leader goes: the coordinator serving the open stream (a
        leader, or one holding the agent until a leader is known), else the last leader
        named by a redirect (which may be gone: the stream moves on, a hint stays)."""
        return self.serving or self.leader_hint

    def _targets(self) -> list[str]:
        known = list(self.identity.coordinators)
        if self.leader_hint:
            return [self.leader_hint] + [k for k in known if k != self.leader_hint]
        return known

    async def run(self) -> None:
        attempt = 0
        while True:
            for target in self._targets():
                try:
                    await self._session(target)
                    attempt = 0
                    self.last_failure = ""
                except (ChannelError, ConnectionError, OSError) as e:
                    self.last_failure = str(e)
                    log.info("link to %s failed: %s", target, e)
                finally:
                    self.connected.clear()
                    self.serving = None
                if self.leader_hint and self.leader_hint != target:
                    break  # redirected: go straight to the leader
            await self.clock.sleep(self.backoff.delay(attempt, self.rng))
            attempt += 1

    async def _session(self, target: str) -> None:
        """One stream: ends on a redirect, a broken stream, a silent coordinator (no message
        for ``silence_limit()`` seconds: a cut link sends no FIN) or a renewed certificate."""
        async with self.dialer.connect(target) as ch:
            outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
            outbox.put_nowait(self._hello())
            if self.leave is not None:
                outbox.put_nowait(pb.AgentMessage(leave=self.leave))
            said_goodbye = asyncio.Event()
            self._outbox, self._said_goodbye = outbox, said_goodbye
            self._renewed.clear()
            self.last_rx = self.clock.monotonic()
            send = asyncio.create_task(self._send(ch, outbox, said_goodbye))
            recv = asyncio.create_task(self._receive(ch, outbox, target))
            hb = asyncio.create_task(self._heartbeats(outbox))
            renew = asyncio.create_task(self._renewed.wait())
            tasks = (send, recv, hb, renew)
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                if self.goodbye_hold_s > 0 and self.connected.is_set() and self.leave is None:
                    # Nothing may follow the goodbye: a heartbeat after it (a change while the
                    # agent stops) tells the coordinator the node is back, ending the hold.
                    hb.cancel()
                    await asyncio.gather(hb, return_exceptions=True)
                    await self._goodbye(outbox, said_goodbye)
                raise
            finally:
                self._outbox = self._said_goodbye = None
                for t in (*tasks, *self._log_tasks.values()):
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._log_tasks.clear()
            if hb.done() and not hb.cancelled() and hb.exception() is None:
                raise ConnectionError(f"{target} sent nothing for {self.silence_limit():.1f}s")
            for t in (recv, send):
                if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
                    raise exc

    @staticmethod
    async def _send(
        ch: AgentEnd, outbox: asyncio.Queue[pb.AgentMessage], said_goodbye: asyncio.Event
    ) -> None:
        """The outbox onto the stream, in order (``send`` waits on flow control). Once the
        coordinator has ended the stream cleanly it only waits: the receiving side reads
        what was sent before the end (a redirect, say) and then ends the session."""
        while True:
            msg = await outbox.get()
            try:
                await ch.send(msg)
            except EndOfChannel:
                await asyncio.Event().wait()
            if msg.WhichOneof("kind") == "goodbye":
                said_goodbye.set()

    def announce_leave(self, deadline_s: float, reason: str) -> None:
        """Tell the coordinator this node is leaving (``Leave``): now if connected, and on
        every session opened until the agent stops."""
        self.leave = pb.Leave(deadline_s=deadline_s, reason=reason)
        if self._outbox is not None:
            self._outbox.put_nowait(pb.AgentMessage(leave=self.leave))

    async def say_goodbye(self, reason: str) -> bool:
        """The last word of a leaving agent (no hold: the node is departed, not awaited);
        False when not connected."""
        if self._outbox is None or self._said_goodbye is None:
            return False
        await self._goodbye(self._outbox, self._said_goodbye, hold=0.0, reason=reason)
        return True

    async def _goodbye(
        self,
        outbox: asyncio.Queue[pb.AgentMessage],
        said: asyncio.Event,
        *,
        hold: float | None = None,
        reason: str = "agent stopping",
    ) -> None:
        """A clean stop: ask the coordinator to hold this node for ``goodbye_hold_s`` (or
        ``hold``); wait (at most 1 s) until the message has been written to the stream."""
        hold = self.goodbye_hold_s if hold is None else hold
        outbox.put_nowait(pb.AgentMessage(goodbye=pb.Goodbye(back_within_s=hold, reason=reason)))
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            async with asyncio.timeout(1.0):
                await said.wait()
                await asyncio.sleep(0.05)  # let the HTTP/2 frame leave the socket
        log.info("said goodbye (hold %.0fs)", hold)

    def silence_limit(self) -> float:
        return max(3.0, 4 * self.interval)

    async def _receive(
        self, ch: AgentEnd, outbox: asyncio.Queue[pb.AgentMessage], target: str
    ) -> None:
        async for msg in ch:
            self.last_rx = self.clock.monotonic()
            self.connected.set()
            self.serving = target
            if self._handle(msg, outbox, target):
                return

    def _hello(self) -> pb.AgentMessage:
        now = self.clock.now()
        return pb.AgentMessage(
            hello=pb.Hello(
                node_id=self.identity.node_id,
                facts=self.facts(),
                replicas=[status_pb(s, now) for s in self.supervisor.statuses()],
                agent_version=VERSION,
                services_updates=self.services_update is not None,
            )
        )

    async def _heartbeats(self, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        """Send heartbeats; return (ending the session) when the coordinator falls silent."""
        usage = UsageOutbox()  # a new stream starts with every replica's usage
        overlay_sent: tuple[bytes, float] = (b"", -OVERLAY_RESEND_S)  # a new stream: at once
        while True:
            if self.clock.monotonic() - self.last_rx > self.silence_limit():
                return
            self.changed.clear()
            self.seq += 1
            s = self.sample()
            now = self.clock.now()
            moved, gone = usage.take(self.usage.latest) if self.usage else ([], [])
            trusted, issuer = self._trust_report()
            hb = pb.Heartbeat(
                seq=self.seq,
                sent_at=now,
                usage=resources_to_pb(s.usage),
                conditions=conditions_to_pb(s.conditions),
                replicas=[status_pb(st, now) for st in self.supervisor.statuses()],
                network_state=self.network_state(),
                replica_usage=[usage_pb(u) for u in moved],
                usage_gone=gone,
                trusted_roots=trusted,
                cert_issuer=issuer,
            )
            overlay = self.overlay()
            if overlay is not None:
                # only when it changed, or every OVERLAY_RESEND_S: it lists every tunnel
                raw, mono = overlay.SerializeToString(), self.clock.monotonic()
                if raw != overlay_sent[0] or mono - overlay_sent[1] >= OVERLAY_RESEND_S:
                    hb.overlay.CopyFrom(overlay)
                    overlay_sent = (raw, mono)
            outbox.put_nowait(pb.AgentMessage(heartbeat=hb))
            which, _ = await first_of(self.changed.wait(), self.clock.sleep(self.interval))
            if which == 0:
                await self.clock.sleep(0.02)  # coalesce a burst of changes

    def _handle(
        self, msg: pb.CoordinatorMessage, outbox: asyncio.Queue[pb.AgentMessage], target: str
    ) -> bool:
        """Act on one message; True ends the session."""
        kind = msg.WhichOneof("kind")
        if kind == "assignments":
            # Obey first: the file only serves a restart while offline. A full disk must not
            # end the session (the same set would be resent and fail again, forever).
            # The network first: a replica of this set must start on the right network.
            if self.network is not None:
                a = msg.assignments
                self.network(a.network if a.HasField("network") else None)
            self.supervisor.assign(assignments_from_pb(msg.assignments))
            try:
                self.assignments.save(msg.assignments)
            except OSError as e:
                log.warning(
                    "could not persist assignments to %s (a restart would start from the "
                    "previous set): %s",
                    self.assignments.path,
                    e,
                )
        elif kind == "services_update":
            # A change to the service table alone; the network says whether it applied (it
            # keeps its table when the update starts from another one) and the file follows.
            if self.services_update is not None:
                cfg = self.services_update(msg.services_update)
                if cfg is not None:
                    try:
                        self.assignments.save_network(cfg)
                    except OSError as e:
                        log.warning("could not persist the service table: %s", e)
        elif kind == "ack":
            if msg.ack.interval_s > 0:
                self.interval = min(max(msg.ack.interval_s, 0.05), 60.0)
            known = list(msg.ack.coordinators)
            changed = False
            if known and known != self.identity.coordinators:
                self.identity.coordinators = known
                changed = True
            if msg.ack.ca_bundle_pem and msg.ack.ca_bundle_pem != self.identity.ca_pem:
                # root rotation: trust what the coordinator (verified by mTLS) says from the
                # next connection on; the open stream is kept
                self.identity.ca_pem = msg.ack.ca_bundle_pem
                changed = True
                self.changed.set()  # report the new trust at once, not a heartbeat later
            if changed and self.on_identity_change is not None:
                self.on_identity_change()
            if msg.ack.renew_now and self.on_renew_requested is not None:
                self.on_renew_requested()
        elif kind == "logs":
            req = msg.logs
            if req.cancel:
                t = self._log_tasks.pop(req.request_id, None)
                if t:
                    t.cancel()
            else:
                self._log_tasks[req.request_id] = asyncio.create_task(self._send_logs(req, outbox))
        elif kind == "redirect":
            hint = msg.redirect.leader_address
            log.info("redirected by %s to %s (%s)", target, hint or "?", msg.redirect.reason)
            self.leader_hint = hint or None
            return True
        return False

    async def _send_logs(self, req: pb.LogRequest, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        try:
            it = self.runtime.container_logs(
                req.replica_id, follow=req.follow, tail=req.tail if req.tail > 0 else None
            )
            try:
                async for line in it:
                    outbox.put_nowait(
                        pb.AgentMessage(
                            log=pb.LogChunk(
                                request_id=req.request_id,
                                stream=line.stream.value,
                                data=(line.text + "\n").encode(),
                            )
                        )
                    )
            finally:
                aclose = getattr(it, "aclose", None)
                if aclose is not None:
                    await aclose()
            outbox.put_nowait(pb.AgentMessage(log=pb.LogChunk(request_id=req.request_id, eof=True)))
        except Exception as e:
            outbox.put_nowait(
                pb.AgentMessage(log=pb.LogChunk(request_id=req.request_id, eof=True, error=str(e)))
            )
        finally:
            self._log_tasks.pop(req.request_id, None)
