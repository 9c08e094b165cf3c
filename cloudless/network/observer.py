"""The overlay as the coordinators observe it, kept in the store.

Tables (under ``/cloudless/``)::

    network-lighthouses/<overlay ip>  LighthouseView: which coordinator runs the lighthouse at
                                      that overlay IP and where devices reach it, its direct
                                      tunnels (from which address each device's packets come) and
                                      the addresses each device reported; created by
                                      ``claim_lighthouse`` (create-if-absent: one IP, one
                                      coordinator), written by that coordinator when its view
                                      changes and every ``REFRESH_S``, deleted with the
                                      coordinator (``release_lighthouse``)
    network-overlay/<node-id>         DeviceOverlay: the node's NAT type, paths, reachability;
                                      written by the leader when it changes

Every coordinator started with a lighthouse address runs one; the publisher hands devices all
registered lighthouses (each is also a relay). ``LighthouseWatch.run()`` (beside the
lighthouse's nebula) reads its admin interface every ``period`` and publishes its view.
``OverlayObserver.lead(fence)`` (leader) classifies every device holding an address slot
(``overlay_state.classify``) from the views not older than ``STALE_S`` and the agents'
reports (held by the dispatcher, in memory, while their session lasts), writes the records
that changed and deletes those of devices without a slot. The network controller leaves the
replicas of a device whose record says ``reachable: false`` out of service endpoints;
``net status`` and ``describe node`` show the records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import Clock
from cloudless.lib.errors import Conflict
from cloudless.network.addressing import AddressPlan
from cloudless.network.errors import AddressExhausted, NetworkEdgeError
from cloudless.network.nebula_admin import Admin, addrmap, hostmap
from cloudless.network.overlay_state import (
    Advertised,
    DeviceOverlay,
    LighthouseView,
    OverlayReport,
    Sighting,
    classify,
)
from cloudless.network.state import DEVICES
from cloudless.store.codec import DataclassCodec
from cloudless.store.errors import Fenced, StoreError
from cloudless.store.fence import Fence
from cloudless.store.protocol import Store
from cloudless.store.tables import TableSpec

log = logging.getLogger(__name__)

LIGHTHOUSES = TableSpec(
    "network-lighthouses", DataclassCodec(LighthouseView, kind="network_lighthouse")
)
OVERLAY = TableSpec("network-overlay", DataclassCodec(DeviceOverlay, kind="network_overlay"))
REFRESH_S = 60.0
ATTEMPTS = 16
STALE_S = 180.0


async def read_view(admin: Admin, lighthouse: str, now: float) -> LighthouseView:
    """One look at a lighthouse through its admin interface (errors become the view's)."""
    try:
        tunnels = await hostmap(admin)
        reported = await addrmap(admin)
    except (NetworkEdgeError, OSError) as e:
        return LighthouseView(lighthouse, observed_at=now, error=str(e))
    return LighthouseView(
        lighthouse,
        tuple(Sighting(t.peer, t.remote) for t in tunnels if t.direct),
        tuple(Advertised(ip, addrs) for ip, addrs in sorted(reported.items())),
        observed_at=now,
    )


async def claim_lighthouse(store: Store, plan: AddressPlan, coordinator: str, address: str) -> str:
    """The overlay IP of ``coordinator``'s lighthouse: the one it holds, else the highest free
    one of ``plan.lighthouse_ips()`` taken by create-if-absent (two coordinators never share
    one); its ``address`` is kept current. ``AddressExhausted`` when all are taken."""
    table = LIGHTHOUSES.bind(store)
    for _ in range(ATTEMPTS):
        listing = await table.list()
        mine = [r for r in listing.records if r.value.coordinator == coordinator]
        if mine:
            r = mine[0]
            if r.value.address == address:
                return r.name
            new = replace(r.value, address=address)
            if await table.cas(r.name, new, expect=r.mod_revision) is not None:
                return r.name
            continue
        taken = {r.name for r in listing.records}
        free = [str(ip) for ip in plan.lighthouse_ips() if str(ip) not in taken]
        if not free:
            raise AddressExhausted(
                f"every lighthouse address ({len(taken)}) is held by a coordinator; remove a "
                "stopped coordinator (cloudless coordinator remove NAME) to free one"
            )
        view = LighthouseView(free[0], coordinator=coordinator, address=address)
        try:
            await table.create(free[0], view)
            return free[0]
        except Conflict:
            continue
    raise StoreError(f"lighthouse address for {coordinator}: the store kept changing")


async def release_lighthouse(store: Store, coordinator: str) -> list[str]:
    """Delete the lighthouse records of a removed coordinator; the overlay IPs freed."""
    table = LIGHTHOUSES.bind(store)
    gone = []
    for r in (await table.list()).records:
        if r.value.coordinator == coordinator and await table.delete(r.name):
            gone.append(r.name)
    return gone


async def registered_lighthouses(store: Store) -> dict[str, tuple[str, ...]]:
    """Overlay IP -> the addresses devices reach it at, for every registered lighthouse."""
    return {
        r.name: (r.value.address,)
        for r in (await LIGHTHOUSES.bind(store).list()).records
        if r.value.address
    }


class LighthouseWatch:
    def __init__(
        self,
        store: Store,
        admin: Admin,
        lighthouse: str,
        clock: Clock,
        period: float = 10.0,
        *,
        coordinator: str = "",
        address: str = "",
    ) -> None:
        self.table = LIGHTHOUSES.bind(store)
        self.admin = admin
        self.lighthouse = lighthouse
        self.clock = clock
        self.period = period
        self.coordinator = coordinator
        self.address = address
        self.last: LighthouseView | None = None

    async def once(self) -> LighthouseView:
        view = replace(
            await read_view(self.admin, self.lighthouse, self.clock.now()),
            coordinator=self.coordinator,
            address=self.address,
        )
        last = self.last
        same = last is not None and (last.seen, last.reported, last.error) == (
            view.seen,
            view.reported,
            view.error,
        )
        if same and last is not None and view.observed_at - last.observed_at < REFRESH_S:
            return last
        try:
            await self.table.put(self.lighthouse, view)
        except StoreError as e:  # the next round writes it again
            log.warning("lighthouse view not stored: %s", e)
            return view
        self.last = view
        return view

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except Exception:  # observing must never take the lighthouse down
                log.exception("lighthouse view not published")
            await self.clock.sleep(self.period)


def fresh_views(views: list[LighthouseView], now: float) -> list[LighthouseView]:
    return [v for v in views if now - v.observed_at <= STALE_S and not v.error]


class OverlayObserver:
    def __init__(
        self,
        store: Store,
        plan: AddressPlan,
        clock: Clock,
        reports: Callable[[], Mapping[str, OverlayReport]],
        period: float = 10.0,
    ) -> None:
        self.store = store
        self.plan = plan
        self.clock = clock
        self.reports = reports  # node id -> its agent's latest report
        self.period = period
        self.table = OVERLAY.bind(store)
        self.nodes = ClusterState(store).nodes

    async def once(self, fence: Fence) -> dict[str, DeviceOverlay]:
        """Classify every device; write what changed. Returns node id -> record."""
        devices = {
            r.name: str(self.plan.addresses(r.value.slot).overlay_ip)
            for r in (await DEVICES.bind(self.store).list()).records
        }
        listing = await LIGHTHOUSES.bind(self.store).list()
        views = fresh_views([r.value for r in listing.records], self.clock.now())
        lighthouses = {v.lighthouse for v in views} | {str(self.plan.lighthouse_ip)}
        by_node = self.reports()
        public = {r.name: r.value.public for r in (await self.nodes.list()).records}
        reports = {devices[n]: r for n, r in by_node.items() if n in devices}
        stored = (await self.table.list()).by_name()
        out: dict[str, DeviceOverlay] = {}
        for node_id, ip in sorted(devices.items()):
            new = classify(ip, views, reports, lighthouses, public=public.get(node_id, False))
            out[node_id] = new
            old = stored.get(node_id)
            if old is None or old.value != new:
                await self.table.put(node_id, new, fence=fence)
                if old is None or old.value.reachable != new.reachable:
                    log.info(
                        "node %s overlay: reachable=%s (%s)",
                        node_id,
                        new.reachable,
                        new.reach_reason,
                    )
        for node_id in set(stored) - set(devices):
            await self.table.delete(node_id, fence=fence)
        return out

    async def lead(self, fence: Fence) -> None:
        while True:
            try:
                await self.once(fence)
            except Fenced:
                raise
            except StoreError as e:  # the next round tries again
                log.warning("overlay records not updated: %s", e)
            await self.clock.sleep(self.period)


async def overlay_records(store: Store) -> dict[str, DeviceOverlay]:
    return {r.name: r.value for r in (await OVERLAY.bind(store).list()).records}


def unreachable(records: Mapping[str, DeviceOverlay]) -> dict[str, str]:
    """Node id -> why, for the devices positively known unreachable."""
    return {n: r.reach_reason for n, r in records.items() if r.reachable is False}
