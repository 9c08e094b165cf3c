"""The agent's side of the network on one device, built from the edges.

``ServicesProgrammer`` keeps the device's nft table, its DNS answers and conntrack in step with
the service table the agent watches: ``apply(services)`` loads the change in one transaction,
then deletes the conntrack entries of endpoints that went away and swaps the DNS index. The
first apply replaces the whole table; later ones send only the services that changed
(``nft.render_delta``), and replace the whole table again when nft refuses that (the table was
changed behind the agent's back). If nft refuses the whole table nothing else changes (the
previous rules and names stay) and the error is raised; applying the same table again does
nothing.

``ContainerNetworks`` gives each container its own network namespace and CNI attachment:
``attach(id, ports)`` creates the namespace ``<prefix><id>`` and runs CNI ADD (removing the
namespace again if ADD fails); ``detach(id)`` runs CNI DEL and removes the namespace; both are
idempotent. ``collect(live)`` detaches every container the agent no longer runs, found by
namespace name, cached CNI result or IPAM lease (containers that died while it was down).
``resolv_conf`` is the resolver file a container gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cloudless.network.cni import Attachment, ContainerNetwork, PortMapping, stale_containers
from cloudless.network.dns_server import DnsServer
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nft import NftContext, render, render_delta, stale_conntrack
from cloudless.network.nft_apply import RuleTable
from cloudless.network.services import Service

NETNS_PREFIX = "cl-"
log = logging.getLogger(__name__)


@dataclass
class ServicesProgrammer:
    ctx: NftContext
    rules: RuleTable
    dns: DnsServer | None = None
    applied: tuple[Service, ...] = ()
    last_seconds: float = 0.0
    last_kind: str = ""  # "full" or "delta": how the last change reached the kernel
    _known: bool = field(default=False, repr=False)  # the kernel holds render(ctx, applied)

    async def apply(self, services: Sequence[Service]) -> bool:
        """Make the device match ``services``; False when it already did."""
        t0 = time.perf_counter()
        services = tuple(services)
        kind = "full"
        if self._known:
            delta = render_delta(self.ctx, self.applied, services)
            if not delta:
                return False
            try:
                await self.rules.apply(delta)
                kind = "delta"
            except NetworkEdgeError as e:
                log.warning("nft refused the change alone (%s); replacing the whole table", e)
                self._known = False
        if kind == "full":
            await self.rules.apply(render(self.ctx, services))
            self._known = True
        gone = stale_conntrack(self.applied, services)
        self.applied = services
        if self.dns is not None:
            self.dns.set_services(services)
        if gone:
            with contextlib.suppress(NetworkEdgeError):  # best effort: rules are already right
                await self.rules.flush_conntrack(gone)
        self.last_seconds = time.perf_counter() - t0
        self.last_kind = kind
        return True


def resolv_conf(nameserver: str, namespace: str, zone: str = "cloudless") -> str:
    return f"nameserver {nameserver}\nsearch {namespace}.{zone} {zone}\noptions ndots:2\n"


class NetnsOps(Protocol):
    async def add(self, name: str) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def names(self) -> list[str]: ...

    def path(self, name: str) -> str: ...


class IpNetns:
    """Namespaces with ``ip netns`` (bind-mounted under /run/netns)."""

    async def _ip(self, *args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def add(self, name: str) -> None:
        rc, out = await self._ip("netns", "add", name)
        if rc != 0 and "File exists" not in out:
            raise NetworkEdgeError(f"ip netns add {name} failed: {out.strip()}")
        await self._ip("-n", name, "link", "set", "lo", "up")

    async def delete(self, name: str) -> None:
        rc, out = await self._ip("netns", "del", name)
        if rc != 0 and "No such file" not in out:
            raise NetworkEdgeError(f"ip netns del {name} failed: {out.strip()}")

    async def names(self) -> list[str]:
        _, out = await self._ip("netns", "list")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def path(self, name: str) -> str:
        return f"/run/netns/{name}"


class FakeNetns:
    def __init__(self) -> None:
        self.live: set[str] = set()

    async def add(self, name: str) -> None:
        self.live.add(name)

    async def delete(self, name: str) -> None:
        self.live.discard(name)

    async def names(self) -> list[str]:
        return sorted(self.live)

    def path(self, name: str) -> str:
        return f"/fake/netns/{name}"


@dataclass
class ContainerNetworks:
    cni: ContainerNetwork
    netns: NetnsOps
    prefix: str = NETNS_PREFIX

    def name(self, container_id: str) -> str:
        return f"{self.prefix}{container_id}"

    async def attach(
        self, container_id: str, ports: Sequence[PortMapping] = ()
    ) -> tuple[str, Attachment]:
        """``(netns path, attachment)`` for the container's OCI spec and its endpoint."""
        name = self.name(container_id)
        await self.netns.add(name)
        try:
            a = await self.cni.add(container_id, self.netns.path(name), ports)
        except BaseException:
            with contextlib.suppress(NetworkEdgeError):
                await self.cni.delete(container_id, self.netns.path(name))
            await self.netns.delete(name)
            raise
        return self.netns.path(name), a

    async def detach(self, container_id: str) -> None:
        name = self.name(container_id)
        await self.cni.delete(container_id, self.netns.path(name))
        await self.netns.delete(name)

    async def collect(self, live: set[str]) -> list[str]:
        """Detach every container not in ``live``; returns their IDs."""
        ours = {
            n[len(self.prefix) :] for n in await self.netns.names() if n.startswith(self.prefix)
        }
        stale = sorted(
            set(stale_containers(await self.cni.attached(), await self.cni.leases(), live))
            | (ours - live)
        )
        for cid in stale:
            await self.detach(cid)
        return stale
