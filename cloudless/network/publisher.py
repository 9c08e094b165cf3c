"""The coordinator's side of the agent stream for networking: ``NetworkPublisher``.

As leader, it watches the device and service records (``state.py``) and keeps, per node, the
``NetworkConfig`` its agent gets with its assignments (``config_for``, read by the agent hub
when it builds a node's set): the node's slot, the plan, its Nebula certificate (issued once
per node and slot by the cluster's Nebula CA, re-issued when the slot changes), the
lighthouses, the blocklist (certificates of nodes that no longer hold a slot) and the whole
service table (numbered by ``services_revision``), and the node's network-policy chains
(``netpolicy_device.device_chains`` over the stored policies and the running replicas). Nodes
whose message changed only in the service table get the services that changed
(``push_services``, see ``service_updates``); other changes re-push the node's whole message
(``repush``): a policy applied or deleted, or a replica coming or going, re-pushes exactly the
nodes whose policy table changes. A node without a slot
yet gets a message that says so (``slot = -1``), so its agent waits instead of starting
containers on the device's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import Clock
from cloudless.model.replica import DesiredState, ReplicaState
from cloudless.network.addressing import AddressPlanConfig, DeviceAddresses
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import NebulaCA
from cloudless.network.nebula_config import groups_from_labels
from cloudless.network.netpolicy import NetworkPolicy
from cloudless.network.netpolicy_device import (
    PlacedEndpoint,
    ReplicaFacts,
    chains_to_pb,
    device_chains,
    endpoints,
)
from cloudless.network.service_updates import by_key, table_update
from cloudless.network.state import DEVICES, SERVICES, stored_policies
from cloudless.network.wire import NebulaIdentity, network_config, service_to_pb
from cloudless.store.errors import DecodeError
from cloudless.store.fence import Fence
from cloudless.store.protocol import Store
from cloudless.store.tables import ROOT

log = logging.getLogger(__name__)
WAITING = "waiting for an address slot (the network controller assigns one within seconds)"


class NetworkPublisher:
    def __init__(
        self,
        store: Store,
        plan_config: AddressPlanConfig,
        clock: Clock,
        repush: Callable[[Iterable[str]], None],
        *,
        ca: NebulaCA | None = None,
        lighthouses: Mapping[str, Sequence[str]] | None = None,
        period: float = 10.0,
        push_services: Callable[[pb.NetworkServicesUpdate, Iterable[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.state = ClusterState(store)
        self.plan_config = plan_config
        self.plan = plan_config.plan()
        self.clock = clock
        self.repush = repush
        self.ca = ca
        self.lighthouses = dict(lighthouses or {})
        self.period = period
        self.push_services = push_services
        self.services_revision = 0  # of the service table, counted by this publisher
        self._table: dict[str, pb.NetworkService] = {}
        self._ordered: list[pb.NetworkService] = []  # the table in message order
        self._bases: dict[str, pb.NetworkConfig] = {}  # each node's message without services
        self._whole: dict[str, pb.NetworkConfig] = {}  # config_for's answers, built on demand
        self._decoded: dict[str, tuple[int, pb.NetworkService]] = {}  # key -> (mod rev, wire)
        self._identities: dict[str, tuple[int, NebulaIdentity | None]] = {}
        self.problem = ""
        self._wake = asyncio.Event()

    def config_for(self, node_id: str) -> pb.NetworkConfig:
        """The node's whole message: its own part with the current service table."""
        got = self._whole.get(node_id)
        if got is not None and got.services_revision == self.services_revision:
            return got
        base = self._bases.get(node_id)
        if base is None:
            return network_config(
                self.plan_config,
                None,
                (),
                nebula=None,
                lighthouses=self.lighthouses,
                reason=WAITING,
            )
        msg = pb.NetworkConfig()
        msg.CopyFrom(base)
        msg.services.extend(self._ordered)
        msg.services_revision = self.services_revision
        self._whole[node_id] = msg
        return msg

    async def lead(self, fence: Fence) -> None:
        async with asyncio.TaskGroup() as tg:
            for table in (
                "network-devices/",
                "network-services/",
                "netpolicies/",
                "replicas/",
                "workloads/",
            ):
                tg.create_task(self._watch(ROOT + table))
            tg.create_task(self._loop())

    async def _watch(self, prefix: str) -> None:
        rev = await self.store.revision()
        async for _ in self.store.watch(prefix, start_revision=rev + 1):
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)
            await self.clock.sleep(0.05)  # one round for a burst of endpoint changes

    async def refresh(self) -> list[str]:
        """Rebuild every node's own part and the service table; push and return the nodes whose
        message changed.

        When only the service table changed for a node it gets the services that changed
        (``push_services``, when the hub offers it); any other change re-pushes the node's whole
        message (``repush``). The service table is built once per round, not per node."""
        devices = {r.name: r.value.slot for r in (await DEVICES.bind(self.store).list()).records}
        table = await self._service_table()
        update = None
        if table != self._table:
            rev = self.services_revision + 1
            update = table_update(self._table, table, self.services_revision, rev)
            self._table, self.services_revision = table, rev
            self._ordered = [table[k] for k in sorted(table, key=lambda k: tuple(k.split("/", 1)))]
        blocklist = await self._blocklist(set(devices))
        policies, cluster = await self._policy_inputs()
        bases: dict[str, pb.NetworkConfig] = {}
        for node_id, slot in sorted(devices.items()):
            ident = await self._identity(node_id, self.plan.addresses(slot))
            base = network_config(
                self.plan_config,
                slot,
                (),
                nebula=ident,
                lighthouses=self.lighthouses,
                blocklist=blocklist,
            )
            base.policy_chains.extend(chains_to_pb(device_chains(policies, cluster, node_id)))
            bases[node_id] = base
        whole = [
            n for n in sorted(set(bases) | set(self._bases)) if bases.get(n) != self._bases.get(n)
        ]
        services_only = sorted(set(bases) - set(whole)) if update is not None else []
        self._bases = bases
        for n in whole:
            self._whole.pop(n, None)
        if services_only and self.push_services is None:
            whole, services_only = sorted(whole + services_only), []
        if services_only:
            assert update is not None and self.push_services is not None
            self.push_services(update, services_only)
        if whole:
            self.repush(whole)
        return sorted(whole + services_only)

    async def _service_table(self) -> dict[str, pb.NetworkService]:
        """The stored services in wire form; a record is decoded again only when it changed
        (its ``mod_revision``), so a round with one changed service decodes one record."""
        services = SERVICES.bind(self.store)
        listing = await self.store.list(services.prefix)
        decoded: dict[str, tuple[int, pb.NetworkService]] = {}
        for kv in listing.kvs:
            hit = self._decoded.get(kv.key)
            if hit is None or hit[0] != kv.mod_revision:
                try:
                    rec = services.decode(kv)
                except DecodeError as e:
                    log.warning("ignoring a service record: %s", e)
                    continue
                hit = (kv.mod_revision, service_to_pb(rec.value.service()))
            decoded[kv.key] = hit
        self._decoded = decoded
        return by_key(m for _, m in decoded.values())

    async def _policy_inputs(self) -> tuple[list[NetworkPolicy], list[PlacedEndpoint]]:
        policies, problems = await stored_policies(self.state.netpolicies)
        for p in problems:
            log.warning("%s", p)
        if not policies:
            return [], []
        snap = await self.state.snapshot()
        workloads = {
            n: (w.spec.namespace, dict(w.spec.labels))
            for n, w in snap.view.workloads.items()
            if not w.deleted
        }
        facts = [
            ReplicaFacts(
                r.workload,
                r.node_id,
                r.endpoint,
                r.desired is DesiredState.RUNNING and r.observed is ReplicaState.RUNNING,
            )
            for r in snap.view.replicas.values()
        ]
        return policies, endpoints(facts, workloads, self.plan.containers)

    # ---- Nebula identities -----------------------------------------------------------------

    def _issued(self, node_id: str) -> Path:
        assert self.ca is not None
        return self.ca.dir / "issued" / node_id

    async def _identity(self, node_id: str, addrs: DeviceAddresses) -> NebulaIdentity | None:
        if self.ca is None:
            return None
        cached = self._identities.get(node_id)
        if cached is not None and cached[0] == addrs.slot:
            return cached[1]
        d = self._issued(node_id)
        try:
            have = await asyncio.to_thread(_read_identity, d, self.ca.crt, addrs.slot)
            if have is None:
                await self.ca.ensure()
                await self.ca.issue(node_id, addrs, groups_from_labels({}), d)
                await asyncio.to_thread((d / "slot").write_text, str(addrs.slot))
                with contextlib.suppress(FileNotFoundError):
                    (d / "fingerprint").unlink()
                have = await asyncio.to_thread(_read_identity, d, self.ca.crt, addrs.slot)
        except (NetworkEdgeError, OSError) as e:
            self.problem = f"node {node_id}: no Nebula certificate: {e}"
            log.warning("%s", self.problem)
            return None
        if have is not None:
            self._identities[node_id] = (addrs.slot, have)
        return have

    async def _blocklist(self, holders: set[str]) -> list[str]:
        """Fingerprints of the certificates of nodes that hold no slot any more."""
        if self.ca is None:
            return []
        root = self.ca.dir / "issued"
        out = []
        names = await asyncio.to_thread(lambda: sorted(p.name for p in root.glob("*")))
        for name in names:
            if name in holders:
                continue
            fp_file = root / name / "fingerprint"
            try:
                fp = await asyncio.to_thread(fp_file.read_text)
            except FileNotFoundError:
                try:
                    fp = await self.ca.fingerprint(root / name / "host.crt")
                except (NetworkEdgeError, OSError):
                    continue
                await asyncio.to_thread(fp_file.write_text, fp)
            out.append(fp.strip())
        return out


def _read_identity(d: Path, ca_crt: Path, slot: int) -> NebulaIdentity | None:
    try:
        if int((d / "slot").read_text()) != slot:
            return None
        return NebulaIdentity(
            ca_crt.read_bytes(), (d / "host.crt").read_bytes(), (d / "host.key").read_bytes()
        )
    except (FileNotFoundError, ValueError):
        return None
