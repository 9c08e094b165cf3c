"""The network as it travels on the agent stream: ``pb.NetworkConfig`` <-> values. Pure.

``network_config`` (coordinator) builds one device's message from its slot, the plan, its
Nebula identity, the lighthouses and the service table; ``DeviceConfig.from_pb`` (agent)
reads it back, refusing a message that would half-apply (a range that does not parse, a slot
outside the plan, a service with a bad VIP) with the field named. ``slot < 0`` means the
coordinator has not given the device addresses yet; ``reason`` says why.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.addressing import AddressPlan, AddressPlanConfig, DeviceAddresses
from cloudless.network.errors import NetworkConfigError
from cloudless.network.netpolicy_device import Chain, chains_from_pb
from cloudless.network.services import (
    BALANCE,
    Endpoint,
    Service,
    ServiceKey,
    ServicePort,
    ServiceSpec,
)


@dataclass(frozen=True)
class NebulaIdentity:
    """PEM texts of the Nebula CA, the device's certificate and its key."""

    ca: bytes
    cert: bytes
    key: bytes


def service_to_pb(s: Service) -> pb.NetworkService:
    return pb.NetworkService(
        namespace=s.key.namespace,
        name=s.key.name,
        vip=str(s.vip),
        ports=[
            pb.NetworkServicePort(port=p.port, protocol=p.protocol, name=p.name)
            for p in s.spec.ports
        ],
        endpoints=[
            pb.NetworkEndpoint(ip=str(e.ip), replica=e.replica, node_id=e.device_id)
            for e in s.endpoints
        ],
        stateful=s.spec.stateful,
        balance=s.spec.balance,
    )


def service_from_pb(m: pb.NetworkService, where: str) -> Service:
    try:
        vip = ipaddress.IPv4Address(m.vip)
        eps = tuple(
            Endpoint(ipaddress.IPv4Address(e.ip), e.replica, e.node_id) for e in m.endpoints
        )
    except ValueError as e:
        raise NetworkConfigError(f"{where}: {e}") from None
    if m.balance and m.balance not in BALANCE:
        raise NetworkConfigError(
            f"{where}.balance: {m.balance!r} is not one of {', '.join(BALANCE)}"
        )
    spec = ServiceSpec(
        ServiceKey(m.namespace, m.name),
        tuple(ServicePort(p.port, p.protocol or "tcp", p.name) for p in m.ports),
        m.stateful,
        m.balance or "random",
    )
    return Service(spec, vip, eps)


@functools.lru_cache(maxsize=8192)
def _service_bytes(raw: bytes) -> Service:
    return service_from_pb(pb.NetworkService.FromString(raw), "network.services")


def _service(m: pb.NetworkService, where: str) -> Service:
    """``service_from_pb``, remembered by the message's bytes: a device reads its whole table
    with every change, and most services did not change."""
    try:
        return _service_bytes(m.SerializeToString(deterministic=True))
    except NetworkConfigError:
        return service_from_pb(m, where)  # raises again, naming the entry


def network_config(
    plan_config: AddressPlanConfig,
    slot: int | None,
    services: Sequence[Service],
    *,
    nebula: NebulaIdentity | None,
    lighthouses: Mapping[str, Sequence[str]],
    blocklist: Sequence[str] = (),
    reason: str = "",
) -> pb.NetworkConfig:
    """One device's network message (``slot`` None: not assigned yet, ``reason`` says why)."""
    msg = pb.NetworkConfig(
        slot=-1 if slot is None else slot,
        overlay_cidr=plan_config.overlay_cidr,
        container_cidr=plan_config.container_cidr,
        container_prefix=plan_config.container_prefix,
        service_cidr=plan_config.service_cidr,
        lighthouses=[
            pb.NetworkLighthouse(overlay_ip=ip, addresses=list(addrs))
            for ip, addrs in sorted(lighthouses.items())
        ],
        services=[service_to_pb(s) for s in sorted(services, key=lambda s: s.key)],
        reason=reason,
        blocklist=sorted(blocklist),
    )
    if nebula is not None:
        msg.nebula_ca, msg.nebula_cert, msg.nebula_key = nebula.ca, nebula.cert, nebula.key
    return msg


@dataclass(frozen=True)
class DeviceConfig:
    """What the agent needs to run its device's network, read from one message."""

    plan: AddressPlan
    addresses: DeviceAddresses
    nebula: NebulaIdentity | None
    lighthouses: Mapping[str, tuple[str, ...]]
    services: tuple[Service, ...]
    blocklist: tuple[str, ...]
    policy_chains: tuple[Chain, ...] = ()

    @classmethod
    def from_pb(cls, m: pb.NetworkConfig) -> DeviceConfig:
        """The device's config; ``NetworkConfigError`` naming the field if it cannot be used
        (and ``slot < 0`` is refused with the coordinator's reason)."""
        if m.slot < 0:
            raise NetworkConfigError(
                f"network.slot: no address slot yet ({m.reason or 'not assigned'})"
            )
        plan = AddressPlanConfig(
            m.overlay_cidr, m.container_cidr, m.container_prefix, m.service_cidr
        ).plan()
        if m.slot >= plan.slots:
            raise NetworkConfigError(f"network.slot: {m.slot} is outside 0..{plan.slots - 1}")
        lighthouses: dict[str, tuple[str, ...]] = {}
        for i, lh in enumerate(m.lighthouses):
            try:
                ipaddress.IPv4Address(lh.overlay_ip)
            except ValueError:
                raise NetworkConfigError(
                    f"network.lighthouses[{i}].overlay_ip: {lh.overlay_ip!r} is not IPv4"
                ) from None
            lighthouses[lh.overlay_ip] = tuple(lh.addresses)
        services = tuple(_service(s, f"network.services[{i}]") for i, s in enumerate(m.services))
        nebula = None
        if m.nebula_cert:
            nebula = NebulaIdentity(m.nebula_ca, m.nebula_cert, m.nebula_key)
        return cls(
            plan,
            plan.addresses(m.slot),
            nebula,
            lighthouses,
            services,
            tuple(m.blocklist),
            chains_from_pb(m.policy_chains),
        )
