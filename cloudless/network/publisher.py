"""The coordinator's side of the agent stream for networking: ``NetworkPublisher``.

As leader, it watches the device and service records (``state.py``) and keeps, per node, the
``NetworkConfig`` its agent gets with its assignments (``config_for``, read by the agent hub
when it builds a node's set): the node's slot, the plan, its Nebula certificate (signed by the
cluster's Nebula CA for the node's own public key and slot, kept in the store by ``certs``,
signed again when the slot or the key changes or 2/3 of its life has gone), every registered
lighthouse, the blocklist (certificates of nodes that no longer hold a slot) and the whole
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
from cloudless.lib.waits import within
from cloudless.model.replica import DesiredState, ReplicaState
from cloudless.network.addressing import AddressPlanConfig, DeviceAddresses
from cloudless.network.certs import CERTS, IssuedCert, current
from cloudless.network.certs import blocklist as cert_blocklist
from cloudless.network.certs import expired as cert_expired
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nebula import NebulaCA
from cloudless.network.nebula_config import CERT_HOURS, groups_from_labels
from cloudless.network.netpolicy import NetworkPolicy
from cloudless.network.netpolicy_device import (
    PlacedEndpoint,
    ReplicaFacts,
    chains_to_pb,
    device_chains,
    endpoints,
)
from cloudless.network.observer import registered_lighthouses
from cloudless.network.service_updates import by_key, table_update
from cloudless.network.state import DEVICES, SERVICES, stored_policies
from cloudless.network.wire import NebulaIdentity, network_config, service_to_pb
from cloudless.store.errors import DecodeError, StoreError
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
        cert_hours: int = CERT_HOURS,
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
        self.cert_hours = cert_hours
        self.services_revision = 0  # of the service table, counted by this publisher
        self._table: dict[str, pb.NetworkService] = {}
        self._ordered: list[pb.NetworkService] = []  # the table in message order
        self._bases: dict[str, pb.NetworkConfig] = {}  # each node's message without services
        self._whole: dict[str, pb.NetworkConfig] = {}  # config_for's answers, built on demand
        self._decoded: dict[str, tuple[int, pb.NetworkService]] = {}  # key -> (mod rev, wire)
        # node -> (the stored certificate it was built from, the identity): no file read
        # for a node whose certificate did not change
        self._identities: dict[str, tuple[IssuedCert, NebulaIdentity]] = {}
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
                await within(self.period, self._wake.wait())
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
        # every coordinator's registered lighthouse (the static map when none registered)
        lighthouses = await registered_lighthouses(self.store) or self.lighthouses
        keys = {r.name: r.value.nebula_public_key for r in (await self.state.nodes.list()).records}
        certs = await self._certs(set(devices))
        blocklist = cert_blocklist(certs, set(devices), self.clock.now())
        policies, cluster = await self._policy_inputs()
        bases: dict[str, pb.NetworkConfig] = {}
        for node_id, slot in sorted(devices.items()):
            ident = await self._identity(
                node_id, self.plan.addresses(slot), keys.get(node_id, ""), certs.get(node_id)
            )
            base = network_config(
                self.plan_config,
                slot,
                (),
                nebula=ident,
                lighthouses=lighthouses,
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

    async def _certs(self, holders: set[str]) -> dict[str, IssuedCert]:
        """The issued certificates in the store; expired ones of removed nodes deleted."""
        if self.ca is None:
            return {}
        table = CERTS.bind(self.store)
        now = self.clock.now()
        out = {}
        for r in (await table.list()).records:
            if r.name not in holders and cert_expired(r.value, now):
                await table.delete(r.name, expect=r.mod_revision)
                continue
            out[r.name] = r.value
        return out

    async def _identity(
        self, node_id: str, addrs: DeviceAddresses, public_key: str, rec: IssuedCert | None
    ) -> NebulaIdentity | None:
        """The node's certificate (``certs``: the stored one while current, else a new one
        signed for its slot and the public key it sent, stored for every leader to see). The
        key stays on the node; the message carries no key. A node that sent no key (an agent
        from before node-made keys) gets a key made here, kept on this coordinator's disk and
        sent over its mutual-TLS stream."""
        if self.ca is None:
            return None
        now = self.clock.now()
        if rec is not None and current(rec, addrs.slot, public_key, now):
            cached = self._identities.get(node_id)
            if cached is not None and cached[0] == rec:
                return cached[1]
        d = self._issued(node_id)
        try:
            key = b""
            if rec is not None and not public_key:
                key = await asyncio.to_thread(_read_key, d, rec.cert)
            if (
                rec is not None
                and current(rec, addrs.slot, public_key, now)
                and (public_key or key)
            ):
                ca_pem = await asyncio.to_thread(self.ca.crt.read_bytes)
                have = NebulaIdentity(ca_pem, rec.cert.encode(), key)
                self._identities[node_id] = (rec, have)
                return have
            await self.ca.ensure()
            groups = groups_from_labels({})
            if public_key:
                crt = await self.ca.sign(node_id, addrs, groups, d, public_key, self.cert_hours)
            else:
                log.warning("node %s sent no Nebula public key: its key is made here", node_id)
                crt, key_path = await self.ca.issue(node_id, addrs, groups, d, self.cert_hours)
                key = await asyncio.to_thread(key_path.read_bytes)
            cert = await asyncio.to_thread(crt.read_text)
            fingerprint = await self.ca.fingerprint(crt)
            new = IssuedCert(addrs.slot, public_key, now, self.cert_hours, cert, fingerprint)
            await CERTS.bind(self.store).put(node_id, new)
            ca_pem = await asyncio.to_thread(self.ca.crt.read_bytes)
            have = NebulaIdentity(ca_pem, cert.encode(), key)
            self._identities[node_id] = (new, have)
            return have
        except (NetworkEdgeError, OSError, StoreError) as e:
            self.problem = f"node {node_id}: no Nebula certificate: {e}"
            log.warning("%s", self.problem)
            return None


def _read_key(d: Path, cert: str) -> bytes:
    """The key this coordinator made for a node that sent none, if ``cert`` is the one it
    issued with it (b"" otherwise: another leader issued it, or none was made here)."""
    try:
        if (d / "host.crt").read_text() != cert:
            return b""
        return (d / "host.key").read_bytes()
    except FileNotFoundError:
        return b""
