"""The agent's container networking: ``AgentNetwork``, the device network run from the
coordinator's ``NetworkConfig`` (sent with the assignments, persisted with them).

States (``state``, with ``reason`` for every one but ``up``):

* ``off``: the coordinator sent no network (it runs without ``--network``), or this device
  lacks what the network needs (root, ``ip``, ``nft``, ``conntrack``, ``nebula``, the CNI
  plugins, ``/dev/net/tun``). Containers share the device's network and get host ports, as
  before; ``attach`` returns None.
* ``waiting``: a network was sent but is not up yet (no address slot yet, bringing up, or
  failed and retrying). ``attach`` waits for ``up`` (at most ``attach_timeout`` seconds) and
  otherwise raises with the reason, so a replica is never started on the wrong network.
* ``up``: the bridge, Nebula and the DNS responder run (``bringup.DeviceNetwork``); every new
  config reprograms nft and DNS from its service table, replaces the network-policy table
  (``inet cloudless_policy``, compiled by the coordinator; removed when it sends none),
  re-applies Nebula (restart when the certificate changed), and a changed address slot
  brings the device network up again. While up, ``OverlayProbe`` reads Nebula's hostmap through
  its admin interface (``sshd`` on loopback) and ``overlay_report`` is what the heartbeats
  carry: each tunnel, direct or relayed, and how long no lighthouse has been reachable.

``attach(replica)`` gives a container its namespace and interface (CNI) and a resolv.conf
pointing at the device's DNS responder; it is idempotent (an adopted container gets its
cached attachment back); ``detach`` undoes it. After coming up, attachments of containers
the runtime no longer holds are collected (they died while the agent was down).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import Clock, SystemClock
from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.network.bringup import BRIDGE, DeviceNetwork
from cloudless.network.cni import CNI_PATH, CniInvoker, PortMapping, bridge_conflist
from cloudless.network.device import ContainerNetworks, IpNetns
from cloudless.network.errors import NetworkConfigError, NetworkEdgeError
from cloudless.network.nebula import NebulaSupervisor
from cloudless.network.nebula_admin import AdminKeys, NebulaAdmin
from cloudless.network.nebula_config import (
    DEFAULT_PORT,
    AdminSettings,
    NebulaSettings,
    render_config,
)
from cloudless.network.nebula_keys import NodeKey
from cloudless.network.netpolicy_device import render_inputs
from cloudless.network.netpolicy_nft import render_compiled
from cloudless.network.nft_apply import NftApplier, NftPolicyTable, PolicyTable
from cloudless.network.overlay_state import report_to_pb
from cloudless.network.probe import OverlayProbe
from cloudless.network.service_updates import StaleServicesUpdate, apply_update
from cloudless.network.wire import DeviceConfig

log = logging.getLogger("cloudless.agent.network")

TOOLS = ("ip", "nft", "conntrack", "nebula")
PLUGINS = ("bridge", "host-local", "loopback", "portmap")
RETRY_S = 5.0
NAMESPACE = "default"


def missing_prerequisite(
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[str], bool] = os.path.exists,
    euid: int | None = None,
    cni_path: str = CNI_PATH,
) -> str | None:
    """Why this device cannot run container networking, or None."""
    if (os.geteuid() if euid is None else euid) != 0:
        return "the agent is not root (network namespaces, CNI and nft need root)"
    for tool in TOOLS:
        if which(tool) is None:
            pkg = {"nebula": "nebula", "conntrack": "conntrack"}.get(tool, "iproute2/nftables")
            return f"`{tool}` is not installed (Debian package {pkg})"
    for plugin in PLUGINS:
        if not exists(os.path.join(cni_path, plugin)):
            return f"CNI plugin {plugin} missing in {cni_path} (containernetworking-plugins)"
    if not exists("/dev/net/tun"):
        return "/dev/net/tun is missing: nebula cannot create its interface"
    return None


def node_key_dir(data_dir: Path) -> Path:
    """Where the node keeps its own Nebula key pair (``nebula_keys.NodeKey``)."""
    return data_dir / "network" / "nebula"


def upstream_resolver(resolv_conf: str) -> tuple[str, int] | None:
    """The first IPv4 nameserver of the device's own resolv.conf (names outside the zone)."""
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1].count(".") == 3:
            return (parts[1], 53)
    return None


@dataclass(frozen=True)
class NetAttachment:
    """A container's network: the namespace path for its OCI spec, its address, and the
    resolv.conf to mount at /etc/resolv.conf."""

    netns: str
    ip: str
    resolv_conf: str


class ContainerNetworking(Protocol):
    """The supervisor's seam: ``attach`` is idempotent per replica and returns None when
    containers use the device's network; ``published`` device ports forward to the
    container's (CNI ``portmap``), fixed at the replica's first attach; ``detach`` of an
    unknown replica does nothing."""

    async def attach(
        self, replica_id: str, published: Sequence[PortMapping] = ()
    ) -> NetAttachment | None: ...

    async def detach(self, replica_id: str) -> None: ...


@dataclass
class FakeNetworking:
    """In memory: addresses from ``subnet`` in order, namespaces ``/fake/netns/<id>``;
    ``down`` makes attach fail with that reason, ``off`` makes it return None."""

    subnet: str = "10.42.1.0/24"
    off: bool = False
    down: str = ""
    attached: dict[str, NetAttachment] = field(default_factory=dict)
    detached: list[str] = field(default_factory=list)
    published: dict[str, tuple[PortMapping, ...]] = field(default_factory=dict)
    _next: int = 2

    async def attach(
        self, replica_id: str, published: Sequence[PortMapping] = ()
    ) -> NetAttachment | None:
        if self.off:
            return None
        if self.down:
            raise CloudlessError(f"the device network is not up: {self.down}")
        if replica_id not in self.attached:
            net = ipaddress.IPv4Network(self.subnet)
            ip = str(net.network_address + self._next)
            self._next += 1
            self.attached[replica_id] = NetAttachment(
                f"/fake/netns/{replica_id}", ip, f"/fake/resolv/{replica_id}.conf"
            )
            self.published[replica_id] = tuple(published)
        return self.attached[replica_id]

    async def detach(self, replica_id: str) -> None:
        if self.attached.pop(replica_id, None) is not None:
            self.detached.append(replica_id)


class AgentNetwork:
    def __init__(
        self,
        data_dir: Path,
        node_name: str,
        *,
        public: bool = False,
        clock: Clock | None = None,
        live_containers: Callable[[], Awaitable[set[str]]] | None = None,
        prerequisite: Callable[[], str | None] = missing_prerequisite,
        host_netns: str | None = None,
        netns_prefix: str = "cl-",
        dns_port: int = 53,
        attach_timeout: float = 60.0,
    ) -> None:
        """``host_netns``: run the device network inside this namespace (namespace labs)."""
        self.dir = data_dir / "network"
        self.node_name = node_name
        self.public = public
        self.clock: Clock = clock or SystemClock()
        self.live_containers = live_containers
        self.prerequisite = prerequisite
        self.host_netns = host_netns
        self.host_argv: tuple[str, ...] = ("ip", "netns", "exec", host_netns) if host_netns else ()
        self.netns_prefix = netns_prefix
        self.dns_port = dns_port
        self.attach_timeout = attach_timeout
        self.state = "off"
        self.reason = "the coordinator sent no network configuration"
        self.device: DeviceNetwork | None = None
        self.config: DeviceConfig | None = None
        self._desired: pb.NetworkConfig | None = None
        self.policy_table: PolicyTable = NftPolicyTable(host_argv=self.host_argv, bridge=BRIDGE)
        self._policy_cleared = False  # a table left from before a restart was removed
        self.admin: AdminSettings | None = None
        self.probe: OverlayProbe | None = None
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set while state is "off" or "up"
        self._settled.set()

    # ---- input -----------------------------------------------------------------------------

    def update(self, msg: pb.NetworkConfig | None) -> None:
        """The latest config from the coordinator (None: it runs without networking)."""
        if msg is None:
            if self._desired is not None:
                log.warning("the coordinator no longer sends a network; keeping the last one")
            return
        if self._desired is not None and msg == self._desired:
            return
        self._desired = msg
        if self.state == "off" and self.prerequisite() is None:
            self._set("waiting", "bringing the device network up")
        self._wake.set()

    def overlay_report(self) -> pb.OverlayReport | None:
        """The overlay as Nebula last showed it (None while no overlay runs)."""
        probe = self.probe
        if probe is None or probe.report is None or self.state != "up":
            return None
        return report_to_pb(probe.report)

    def update_services(self, update: pb.NetworkServicesUpdate) -> pb.NetworkConfig | None:
        """A change to the service table of the latest config: the patched config (the loop
        applies it), or None when it does not apply to the table held (logged; the
        coordinator sends the whole config whenever a device's table is not the update's
        base, so the next one repairs it)."""
        if self._desired is None:
            log.warning("a service table change arrived before any network config; ignored")
            return None
        try:
            patched = apply_update(self._desired, update)
        except StaleServicesUpdate as e:
            log.warning("%s", e)
            return None
        self.update(patched)
        return patched

    def gateway(self) -> str | None:
        """The device's container bridge address while the device network is up: where its
        containers and the overlay reach services the agent runs on every address."""
        dn = self.device
        return str(dn.addresses.gateway) if self.state == "up" and dn is not None else None

    def describe(self) -> str:
        """``up``, or ``<state>: <reason>`` (what the agent reports with its heartbeats)."""
        return self.state if self.state == "up" else f"{self.state}: {self.reason}"

    def _set(self, state: str, reason: str) -> None:
        if (state, reason) != (self.state, self.reason):
            log.info("network %s%s", state, f": {reason}" if reason else "")
        self.state, self.reason = state, reason
        if state in ("off", "up"):
            self._settled.set()
        else:
            self._settled.clear()

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            while self._desired is None:
                self._wake.clear()
                await self._wake.wait()
            missing = self.prerequisite()
            if missing:
                self._set("off", f"container networking unavailable here: {missing}")
                log.warning("containers use the device's network: %s", missing)
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                cfg = DeviceConfig.from_pb(self._desired)
            except NetworkConfigError as e:
                self._set("waiting", str(e))
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._serve(cfg)
            except* Exception as eg:  # the agent keeps running; the network retries
                why = "; ".join(f"{type(e).__name__}: {e}" for e in eg.exceptions)
                self._set("waiting", f"device network failed, retrying in {RETRY_S:.0f}s: {why}")
                log.warning("%s", self.reason)
                await self.clock.sleep(RETRY_S)

    async def _serve(self, cfg: DeviceConfig) -> None:
        """Bring the device network up for ``cfg`` and follow new configs; returns when the
        addresses change (the caller brings it up again)."""
        dn = await asyncio.to_thread(self._build, cfg)
        if dn.overlay is not None:
            await dn.overlay.apply(self._nebula_config(cfg))  # run() starts nebula with it
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(dn.run())
            ready = tg.create_task(dn.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                return  # run() ended: its error propagates through the group
            self.device, self.config = dn, cfg
            await dn.update_services(cfg.services)
            await self._apply_policy(cfg)
            # Stale networks go before "up" lets attaches through: one made for a replica
            # starting now is not a container yet and would look stale.
            await self._collect(dn)
            self._set("up", "")
            probe = None
            if dn.overlay is not None and self.admin is not None:
                self.probe = OverlayProbe(
                    NebulaAdmin(
                        AdminKeys(self._admin_dir()), DEFAULT_PORT, host_argv=self.host_argv
                    ),
                    lambda: self.config.lighthouses if self.config else (),
                    self.clock,
                )
                probe = tg.create_task(self.probe.run())
            try:
                await self._follow(dn, cfg)
            finally:
                self.device = None
                self.probe = None
                if probe is not None:
                    probe.cancel()
                task.cancel()

    async def _follow(self, dn: DeviceNetwork, cfg: DeviceConfig) -> None:
        while True:
            self._wake.clear()
            await self._wake.wait()
            assert self._desired is not None
            try:
                new = DeviceConfig.from_pb(self._desired)
            except NetworkConfigError as e:
                log.warning("ignoring a network config that cannot be used: %s", e)
                continue
            if (new.addresses, new.plan) != (cfg.addresses, cfg.plan):
                self._set("waiting", "the device's address slot changed; bringing it up again")
                return
            if (new.nebula, new.lighthouses, new.blocklist) != (
                cfg.nebula,
                cfg.lighthouses,
                cfg.blocklist,
            ) and dn.overlay is not None:
                cert_changed = new.nebula != cfg.nebula
                await asyncio.to_thread(self._write_nebula_files, new)
                await dn.overlay.apply(self._nebula_config(new), cert_changed=cert_changed)
            await dn.update_services(new.services)
            await self._apply_policy(new)
            cfg = self.config = new

    async def _apply_policy(self, cfg: DeviceConfig) -> None:
        """Program the policy table the coordinator compiled (remove it when it sent none);
        a failure leaves the previous table in place (logged) and is retried with the next
        config; it never takes the device network down."""
        try:
            if not cfg.policy_chains:
                if self.policy_table.document or not self._policy_cleared:
                    await self.policy_table.remove()
                    self._policy_cleared = True
                return
            compiled, local, egress = render_inputs(cfg.policy_chains)
            doc = render_compiled(compiled, local, str(cfg.plan.containers), egress=egress)
            if doc != self.policy_table.document:
                await self.policy_table.apply(doc)
        except NetworkEdgeError as e:
            log.warning("network policy not programmed, the previous table stays: %s", e)

    async def _collect(self, dn: DeviceNetwork) -> None:
        if self.live_containers is None:
            return
        try:
            gone = await dn.collect(await self.live_containers())
        except (NetworkEdgeError, CloudlessError) as e:
            log.warning("could not collect stale container networks: %s", e)
            return
        if gone:
            log.info("removed the networks of %d containers gone while away", len(gone))

    # ---- building --------------------------------------------------------------------------

    def _build(self, cfg: DeviceConfig) -> DeviceNetwork:
        conf = bridge_conflist(cfg.addresses, data_dir=str(self.dir / "ipam"))
        cni = CniInvoker(conf, str(self.dir / "cni"), host_argv=self.host_argv)
        overlay = None
        if cfg.nebula is not None and cfg.lighthouses:
            if not cfg.nebula.key:
                self.nebula_public_key()  # nebula then names a key that does not fit its cert
            self._write_nebula_files(cfg)
            try:
                self.admin = AdminKeys(self._admin_dir()).ensure(DEFAULT_PORT)
            except (OSError, ValueError, NetworkEdgeError) as e:  # the overlay runs unobserved
                log.warning("nebula admin keys: %s; the overlay is not reported", e)
                self.admin = None
            overlay = NebulaSupervisor(
                self.dir / "nebula-run", host_argv=self.host_argv, clock=self.clock
            )
        try:
            upstream = upstream_resolver(Path("/etc/resolv.conf").read_text())
        except OSError:
            upstream = None
        dn = DeviceNetwork(
            cfg.addresses,
            cfg.plan,
            ContainerNetworks(cni, IpNetns(), prefix=self.netns_prefix),
            NftApplier(host_argv=self.host_argv),
            overlay=overlay,
            upstream_dns=upstream,
            host_argv=self.host_argv,
            netns=self.host_netns,
            dns_port=self.dns_port,
        )
        return dn

    def nebula_public_key(self) -> str:
        """The node's own Nebula public key, the pair made if missing (blocking file I/O)."""
        return NodeKey(self.dir / "nebula").ensure()

    def _admin_dir(self) -> Path:
        return self.dir / "nebula-admin"

    def _nebula_paths(self, cfg: DeviceConfig) -> tuple[Path, Path, Path]:
        """CA, certificate and key: the node's own key (``node.key``, made by this node and
        never sent) unless the coordinator sent one (for an agent that sent no public key)."""
        d = self.dir / "nebula"
        own = cfg.nebula is None or not cfg.nebula.key
        return d / "ca.crt", d / "host.crt", NodeKey(d).key if own else d / "host.key"

    def _write_nebula_files(self, cfg: DeviceConfig) -> None:
        assert cfg.nebula is not None
        ca, crt, key = self._nebula_paths(cfg)
        ca.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = [(ca, cfg.nebula.ca), (crt, cfg.nebula.cert)]
        if cfg.nebula.key:
            files.append((key, cfg.nebula.key))
        for path, data in files:
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    def _nebula_config(self, cfg: DeviceConfig) -> dict[str, object]:
        ca, crt, key = self._nebula_paths(cfg)
        return render_config(
            NebulaSettings(
                name=self.node_name,
                addresses=cfg.addresses,
                plan=cfg.plan,
                ca_path=str(ca),
                cert_path=str(crt),
                key_path=str(key),
                lighthouses=cfg.lighthouses,
                behind_nat=not self.public,
                relays=tuple(sorted(cfg.lighthouses)),
                blocklist=cfg.blocklist,
                withhold=tuple(str(r) for r in cfg.plan.cluster_ranges()),
                admin=self.admin,
            )
        )

    # ---- containers ------------------------------------------------------------------------

    async def attach(
        self, replica_id: str, published: Sequence[PortMapping] = ()
    ) -> NetAttachment | None:
        """The container's network, or None when containers use the device's network."""
        if self.state == "off":
            return None
        with contextlib.suppress(TimeoutError):
            await within(self.attach_timeout, self._settled.wait())
        dn = self.device
        if self.state == "off":
            return None
        if self.state != "up" or dn is None:
            raise CloudlessError(f"the device network is not up: {self.reason}")
        path, a, resolv = await dn.attach(replica_id, NAMESPACE, published)
        conf = self.dir / "resolv" / f"{replica_id}.conf"
        await asyncio.to_thread(_write_text, conf, resolv)
        return NetAttachment(path, a.ip, str(conf))

    async def detach(self, replica_id: str) -> None:
        dn = self.device
        if dn is None:
            return
        try:
            await dn.detach(replica_id)
        except NetworkEdgeError as e:
            log.warning("detaching %s: %s", replica_id, e)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "resolv" / f"{replica_id}.conf").unlink()

    async def bring_up(self, cfg: pb.NetworkConfig) -> None:
        """Test helper for one-shot setups: ``update`` then wait until settled."""
        self.update(cfg)
        await within(self.attach_timeout, self._settled.wait())


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
