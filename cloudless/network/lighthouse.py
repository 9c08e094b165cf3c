"""The coordinator's Nebula lighthouse and relay: ``Lighthouse.run()``.

Every coordinator started with ``network.lighthouse`` runs one. It holds an overlay address
of its own from the top of the overlay (``AddressPlan.lighthouse_ips``, claimed in the store
under the coordinator's name: ``observer.claim_lighthouse``; without a store, the last usable
address), listens where ``network.lighthouse`` says devices reach it, answers lighthouse
queries and relays for devices behind NAT. Its tun device is off: it forwards the overlay's
encrypted packets, it routes no container traffic. Its Nebula admin interface (``sshd`` on
loopback, at the number of its UDP port) is read by ``LighthouseWatch``, which publishes the
lighthouse's view of the devices (``observer``) for the NAT types and reachability the
leader works out. ``network_publisher`` builds the coordinator's ``NetworkPublisher`` with
the cluster's Nebula CA (``<ca_dir>/nebula``, kept like the X.509 CA) and this lighthouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import Clock, SystemClock
from cloudless.network.addressing import AddressPlan, AddressPlanConfig, DeviceAddresses
from cloudless.network.errors import AddressExhausted, NetworkEdgeError
from cloudless.network.nebula import NebulaCA, NebulaSupervisor
from cloudless.network.nebula_admin import AdminKeys, NebulaAdmin
from cloudless.network.nebula_config import NebulaSettings, groups_from_labels, render_config
from cloudless.network.observer import LighthouseWatch, claim_lighthouse
from cloudless.network.publisher import NetworkPublisher
from cloudless.store.errors import StoreError
from cloudless.store.protocol import Store

log = logging.getLogger(__name__)
RETRY_S = 30.0


class Lighthouse:
    def __init__(
        self,
        ca: NebulaCA,
        plan: AddressPlan,
        listen: str,
        workdir: Path,
        *,
        host_argv: Sequence[str] = (),
        store: Store | None = None,
        clock: Clock | None = None,
        coordinator: str = "",
    ) -> None:
        """``store`` and ``clock``: register the lighthouse under ``coordinator`` and publish
        its view there (None: neither; it takes the overlay's last usable address)."""
        self.ca = ca
        self.plan = plan
        self.listen = listen
        self.dir = workdir
        self.host_argv = tuple(host_argv)
        self.nebula = NebulaSupervisor(workdir / "run", host_argv=host_argv)
        self.store = store
        self.clock = clock
        self.coordinator = coordinator
        self.overlay_ip = plan.lighthouse_ip
        self.port = int(listen.rpartition(":")[2])
        self.keys = AdminKeys(workdir / "admin")
        self.watch: LighthouseWatch | None = None

    def addresses(self) -> DeviceAddresses:
        ip = self.overlay_ip
        return DeviceAddresses(-1, ip, self.plan.overlay, ipaddress.IPv4Network(f"{ip}/32"))

    async def run(self) -> None:
        """Run until cancelled. What stops it from starting (no CA yet on a joined
        coordinator, the store unavailable, every lighthouse address taken) is logged with
        the reason and tried again every ``RETRY_S``: it never ends the coordinator."""
        clock = self.clock or SystemClock()
        while True:
            try:
                cfg = await self._prepare()
                break
            except (NetworkEdgeError, AddressExhausted, StoreError, OSError) as e:
                log.error("no nebula lighthouse yet, retrying in %.0fs: %s", RETRY_S, e)
                await clock.sleep(RETRY_S)
        await self._serve(cfg)

    async def _prepare(self) -> dict[str, Any]:
        """The CA, the overlay address, the certificate and admin keys: Nebula's config."""
        await self.ca.ensure()
        if self.store is not None:
            ip = await claim_lighthouse(self.store, self.plan, self.coordinator, self.listen)
            self.overlay_ip = ipaddress.IPv4Address(ip)
        addrs = self.addresses()
        groups = groups_from_labels({}, lighthouse=True)
        name = f"lighthouse-{self.coordinator}" if self.coordinator else "lighthouse"
        crt, key = await self.ca.issue(name, addrs, groups, self.dir / "pki")
        admin = await asyncio.to_thread(self.keys.ensure, self.port)
        return render_config(
            NebulaSettings(
                name=name,
                addresses=addrs,
                plan=self.plan,
                ca_path=str(self.ca.crt),
                cert_path=str(crt),
                key_path=str(key),
                lighthouses={str(addrs.overlay_ip): [self.listen]},
                am_lighthouse=True,
                listen_port=self.port,
                admin=admin,
                extra={"tun": {"disabled": True}},
            )
        )

    async def _serve(self, cfg: dict[str, Any]) -> None:
        await self.nebula.apply(cfg)
        log.info("nebula lighthouse %s listening on :%d", self.overlay_ip, self.port)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.nebula.run())
            if self.store is not None and self.clock is not None:
                with contextlib.suppress(NetworkEdgeError):  # the view says what is wrong
                    await self.nebula.wait_active(30)
                self.watch = LighthouseWatch(
                    self.store,
                    NebulaAdmin(self.keys, self.port, host_argv=self.host_argv),
                    str(self.overlay_ip),
                    self.clock,
                    coordinator=self.coordinator,
                    address=self.listen,
                )
                tg.create_task(self.watch.run())


class Hub(Protocol):
    network_for: Callable[[str], pb.NetworkConfig | None]

    def repush(self, node_ids: Iterable[str]) -> None: ...

    def push_services(self, update: pb.NetworkServicesUpdate, node_ids: Iterable[str]) -> None: ...


def network_publisher(
    network: AddressPlanConfig | None,
    ca_dir: Path,
    store: Store,
    clock: Clock,
    hub: Hub,
    *,
    joined: bool = False,
    coordinator: str = "",
) -> tuple[NetworkPublisher | None, Lighthouse | None]:
    """The coordinator's publisher (None without networking) and lighthouse (None without
    ``network.lighthouse`` or without ``nebula``/``nebula-cert``; logged with the reason).
    ``joined``: this coordinator joined a cluster, so it uses the cluster's Nebula CA from
    the join answer and never makes one."""
    if network is None:
        return None, None
    plan = network.plan()
    ca: NebulaCA | None = None
    lighthouse: Lighthouse | None = None
    missing = [t for t in ("nebula", "nebula-cert") if shutil.which(t) is None]
    if missing:
        log.warning(
            "no encrypted overlay: %s not installed (Debian package nebula); containers reach "
            "services on their own device only",
            " and ".join(missing),
        )
    else:
        ca = NebulaCA(ca_dir / "nebula", create=not joined)
        if network.lighthouse:
            lighthouse = Lighthouse(
                ca,
                plan,
                network.lighthouse,
                ca_dir.parent / "nebula",
                store=store,
                clock=clock,
                coordinator=coordinator,
            )
        else:
            log.warning("network.lighthouse not set: devices get no lighthouse, no overlay")
    lighthouses = {str(plan.lighthouse_ip): [network.lighthouse]} if lighthouse else {}
    pub = NetworkPublisher(
        store,
        network,
        clock,
        hub.repush,
        ca=ca,
        lighthouses=lighthouses,
        push_services=hub.push_services,
    )
    hub.network_for = pub.config_for
    return pub, lighthouse
