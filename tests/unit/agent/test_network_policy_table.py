"""The agent's side of network policy over the ``FakePolicyTable`` seam: the chains of each
config are rendered and applied once, an unchanged config is not re-applied, no chain
removes the table (also one left from before a restart), and a table nft refuses leaves the
previous one without taking the device network down."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cloudless.agent.network import AgentNetwork
from cloudless.lib.clock import FakeClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.netpolicy import parse_policy
from cloudless.network.netpolicy_device import (
    ReplicaFacts,
    chains_to_pb,
    device_chains,
    endpoints,
)
from cloudless.network.nft_apply import FakePolicyTable
from cloudless.network.wire import DeviceConfig, network_config

CFG = AddressPlanConfig()
POLICY = parse_policy(
    {"name": "p", "namespace": "db", "ingress": [{"from": [{"namespace": "web"}]}]}
)
WORKLOADS: dict[str, tuple[str, dict[str, str]]] = {"db": ("db", {}), "web": ("web", {})}


def config(*replicas: ReplicaFacts, policies: bool = True) -> DeviceConfig:
    cluster = endpoints(replicas, WORKLOADS, ipaddress.IPv4Network("10.42.0.0/16"))
    msg = network_config(CFG, 1, [], nebula=None, lighthouses={})
    msg.policy_chains.extend(
        chains_to_pb(device_chains([POLICY] if policies else [], cluster, "n2"))
    )
    return DeviceConfig.from_pb(msg)


DB = ReplicaFacts("db", "n2", "10.42.1.2:5432", True)
DB2 = ReplicaFacts("db", "n2", "10.42.1.3:5432", True)
WEB = ReplicaFacts("web", "n1", "10.42.0.2:80", True)


async def test_policy_table_follows_the_configs(tmp_path: Path) -> None:
    net = AgentNetwork(tmp_path, "n2", clock=FakeClock())
    fake = FakePolicyTable()
    fake.document = "left from before a restart"
    net.policy_table = fake
    await net._apply_policy(config(DB, WEB, policies=False))
    assert fake.document == "" and fake.applied == 0  # removed once, nothing applied
    await net._apply_policy(config(DB, WEB))
    assert await fake.destinations() == ["10.42.1.2"] and fake.applied == 1
    await net._apply_policy(config(DB, WEB))
    assert fake.applied == 1  # same table: not re-applied
    await net._apply_policy(config(DB, DB2, WEB))  # a second db replica on this device
    assert await fake.destinations() == ["10.42.1.2", "10.42.1.3"] and fake.applied == 2
    await net._apply_policy(config(DB, WEB, policies=False))
    assert fake.document == "" and await fake.destinations() == []


async def test_a_refused_table_leaves_the_previous_one(tmp_path: Path) -> None:
    net = AgentNetwork(tmp_path, "n2", clock=FakeClock())
    fake = FakePolicyTable()
    net.policy_table = fake
    await net._apply_policy(config(DB, WEB))
    before = fake.document
    fake.table = "another_table"  # every document is now refused as not a replacement of it
    await net._apply_policy(config(DB, DB2, WEB))  # logged, not raised
    assert fake.document == before and await fake.destinations() == ["10.42.1.2"]
