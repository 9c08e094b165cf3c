"""One device's whole network, as the agent will run it: ``DeviceNetwork``.

``run()`` (inside the agent's TaskGroup) brings the device up and keeps it:

* the bridge ``cl0`` with the gateway address of the device's slot (created here, so the DNS
  responder can bind before the first container; the CNI bridge plugin adopts it), forwarding
  on, and a route for the service range from the gateway address (device-local clients);
* the overlay (``Overlay.run``: Nebula, supervised) when one is given;
* the DNS responder on ``<gateway>:53`` answering from the current service table.

``update_services(services)`` programs nft, conntrack and DNS in one step
(``ServicesProgrammer``); ``attach``/``detach``/``collect`` manage container namespaces and CNI
attachments (``ContainerNetworks``), and ``attach`` also says which namespace the container is
in (for short DNS names) and returns its resolv.conf. Commands run through ``host_argv`` (a
device namespace in tests; empty on a real device) and sockets are bound in ``netns`` when set.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloudless.network.addressing import AddressPlan, DeviceAddresses
from cloudless.network.cni import Attachment, PortMapping
from cloudless.network.device import ContainerNetworks, ServicesProgrammer, resolv_conf
from cloudless.network.dns_server import DnsServer
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import Overlay
from cloudless.network.nft import NftContext
from cloudless.network.nft_apply import RuleTable
from cloudless.network.services import Service

BRIDGE = "cl0"


@dataclass
class DeviceNetwork:
    addresses: DeviceAddresses
    plan: AddressPlan
    containers: ContainerNetworks
    rules: RuleTable
    overlay: Overlay | None = None
    upstream_dns: tuple[str, int] | None = None
    host_argv: Sequence[str] = ()
    netns: str | None = None  # bind the DNS sockets in this namespace (tests)
    dns_port: int = 53
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _namespaces: dict[str, str] = field(default_factory=dict)  # container ip -> namespace
    _by_id: dict[str, str] = field(default_factory=dict)  # container id -> ip
    dns: DnsServer | None = None
    programmer: ServicesProgrammer | None = None

    async def _sh(self, *argv: str, ok: tuple[str, ...] = ()) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.host_argv,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace").strip()
        if proc.returncode and not any(o in text for o in ok):
            raise NetworkEdgeError(f"`{' '.join(argv)}` failed: {text}")

    async def _bridge(self) -> None:
        gw = f"{self.addresses.gateway}/{self.addresses.container_subnet.prefixlen}"
        await self._sh("ip", "link", "add", BRIDGE, "type", "bridge", ok=("File exists",))
        # a restarted agent finds its bridge as it left it: iproute2 says "File exists" or,
        # from 6.x, "Address already assigned"
        await self._sh(
            *("ip", "addr", "add", gw, "dev", BRIDGE),
            ok=("File exists", "Address already assigned"),
        )
        await self._sh("ip", "link", "set", BRIDGE, "mtu", "1300", "up")
        await self._sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
        await self._sh(
            *("ip", "route", "replace", str(self.plan.services), "dev", BRIDGE),
            *("src", str(self.addresses.gateway)),
        )

    def _sockets(self) -> tuple[socket.socket, socket.socket] | None:
        if self.netns is None:
            return None
        from cloudless.network.lab import bind_in_netns

        addr = (str(self.addresses.gateway), self.dns_port)
        return (
            bind_in_netns(self.netns, socket.SOCK_DGRAM, addr),
            bind_in_netns(self.netns, socket.SOCK_STREAM, addr),
        )

    async def run(self) -> None:
        await self._bridge()
        self.dns = DnsServer(
            str(self.addresses.gateway),
            self.dns_port,
            upstream=self.upstream_dns,
            namespace_of=self._namespaces.get,
            sockets=await asyncio.to_thread(self._sockets),
        )
        ctx = NftContext(
            self.addresses.container_subnet, self.plan.containers, self.plan.cluster_ranges()
        )
        self.programmer = ServicesProgrammer(ctx, self.rules, self.dns)
        await self.programmer.apply([])
        async with asyncio.TaskGroup() as tg:
            if self.overlay is not None:
                tg.create_task(self.overlay.run())
            tg.create_task(self.dns.run())
            await self.dns.ready.wait()
            if self.overlay is not None:
                await self.overlay.wait_active(30)
            self.ready.set()

    async def update_services(self, services: Sequence[Service]) -> bool:
        if self.programmer is None:
            raise NetworkEdgeError("the device network is not up yet (run() first)")
        return await self.programmer.apply(services)

    async def attach(
        self, container_id: str, namespace: str, ports: Sequence[PortMapping] = ()
    ) -> tuple[str, Attachment, str]:
        """``(netns path, attachment, resolv.conf text)`` for a new container."""
        path, a = await self.containers.attach(container_id, ports)
        self._namespaces[a.ip] = namespace
        self._by_id[container_id] = a.ip
        return path, a, resolv_conf(str(self.addresses.gateway), namespace)

    async def detach(self, container_id: str) -> None:
        await self.containers.detach(container_id)
        self._namespaces.pop(self._by_id.pop(container_id, ""), None)

    async def collect(self, live: set[str]) -> list[str]:
        gone = await self.containers.collect(live)
        for cid in gone:
            self._namespaces.pop(self._by_id.pop(cid, ""), None)
        return gone
