"""The coordinator's side of the agent stream for networking: ``NetworkPublisher``.

As leader, it watches the device and service records (``state.py``) and keeps, per node, the
``NetworkConfig`` its agent gets with its assignments (``config_for``, read by the agent hub
when it builds a node's set): the node's slot, the plan, its Nebula certificate (signed by the
cluster's Nebula CA for the node's own public key and slot, kept in the store by ``certs``,
signed again when the slot or the key changes or 2/3 of its life has gone), every registered
lighthouse, the blocklist (certificates of nodes that no longer hold a slot) and the whole
service table, and the node's network-policy chains (``netpolicy_device.device_chains`` over
the stored policies and the running replicas). Nodes whose message changed are re-pushed
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
from cloudless.network.state import DEVICES, list_services, stored_policies
from cloudless.network.wire import NebulaIdentity, network_config
from cloudless.store.errors import StoreError
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
        self.cert_hours = cert_hours
        self.configs: dict[str, pb.NetworkConfig] = {}
        self.problem = ""
        self._wake = asyncio.Event()

    def config_for(self, node_id: str) -> pb.NetworkConfig:
        got = self.configs.get(node_id)
        if got is not None:
            return got
        return network_config(
            self.plan_config, None, (), nebula=None, lighthouses=self.lighthouses, reason=WAITING
        )

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
        """Rebuild every node's message; re-push and return the nodes whose message changed."""
        devices = {r.name: r.value.slot for r in (await DEVICES.bind(self.store).list()).records}
        # every coordinator's registered lighthouse (the static map when none registered)
        lighthouses = await registered_lighthouses(self.store) or self.lighthouses
        keys = {r.name: r.value.nebula_public_key for r in (await self.state.nodes.list()).records}
        services = [r.service() for r in await list_services(self.store)]
        certs = await self._certs(set(devices))
        blocklist = cert_blocklist(certs, set(devices), self.clock.now())
        policies, cluster = await self._policy_inputs()
        new: dict[str, pb.NetworkConfig] = {}
        for node_id, slot in sorted(devices.items()):
            ident = await self._identity(
                node_id, self.plan.addresses(slot), keys.get(node_id, ""), certs.get(node_id)
            )
            new[node_id] = network_config(
                self.plan_config,
                slot,
                services,
                nebula=ident,
                lighthouses=lighthouses,
                blocklist=blocklist,
            )
            new[node_id].policy_chains.extend(
                chains_to_pb(device_chains(policies, cluster, node_id))
            )
        changed = [
            n for n in sorted(set(new) | set(self.configs)) if new.get(n) != self.configs.get(n)
        ]
        self.configs = new
        if changed:
            self.repush(changed)
        return changed

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
        d = self._issued(node_id)
        now = self.clock.now()
        try:
            key = b""
            if rec is not None and not public_key:
                key = await asyncio.to_thread(_read_key, d, rec.cert)
            if current(rec, addrs.slot, public_key, now) and (public_key or key):
                ca_pem = await asyncio.to_thread(self.ca.crt.read_bytes)
                assert rec is not None
                return NebulaIdentity(ca_pem, rec.cert.encode(), key)
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
            return NebulaIdentity(ca_pem, cert.encode(), key)
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
