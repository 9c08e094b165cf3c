"""Builders for network tests: services with endpoints in a line."""

from __future__ import annotations

import ipaddress

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.nft import NftContext
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec

PLAN = AddressPlanConfig().plan()
CTX = NftContext(PLAN.addresses(1).container_subnet, PLAN.containers, PLAN.cluster_ranges())


def svc(
    name: str,
    vip: str,
    *eps: str,
    ns: str = "default",
    ports: tuple[int, ...] = (80,),
    proto: str = "tcp",
    stateful: bool = False,
    balance: str = "random",
) -> Service:
    """A service whose endpoints are ``eps`` named ``<name>-<i>``, on device "d"."""
    spec = ServiceSpec(
        ServiceKey(ns, name),
        tuple(ServicePort(p, proto) for p in ports),
        stateful=stateful,
        balance=balance,
    )
    endpoints = tuple(
        Endpoint(ipaddress.IPv4Address(ip), f"{name}-{i}", "d") for i, ip in enumerate(eps)
    )
    return Service(spec, ipaddress.IPv4Address(vip), endpoints)
