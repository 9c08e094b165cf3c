"""Services: stable virtual IPs and the endpoint set behind each.

Rules:

* A workload with ports is a service named ``<name>.<namespace>``; both parts are DNS labels
  (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters), ports are 1..65535.
* ``allocate_vip`` is stable: a service that holds a VIP keeps it across every move of its
  replicas. A new one gets the lowest free address of the service range (not its network or
  broadcast address) or the VIP it asks for; two services never hold one VIP (VipConflict
  names the holder).
* ``endpoint_set`` keeps the replicas that are running and ready, whose address lies in their
  device's container subnet; every other replica is counted in ``total`` and, when its address
  is wrong, named in ``ignored`` with the reason. Endpoints are sorted by address, so the same
  replicas always render the same rules.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloudless.lib.errors import ValidationError
from cloudless.network.addressing import DeviceAddresses, IPv4Addr, IPv4Net
from cloudless.network.errors import AddressExhausted, VipConflict

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PROTOCOLS = ("tcp", "udp")
BALANCE = ("random", "source-hash", "local-first")


def label_problem(field_name: str, value: object) -> str | None:
    if not isinstance(value, str) or not _LABEL.match(value):
        return (
            f"{field_name}: {value!r} is not a DNS label (lowercase letters, digits and '-', "
            "1-63 characters, starting and ending with a letter or digit)"
        )
    return None


@dataclass(frozen=True, order=True)
class ServiceKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"


SYSTEM_NAMESPACE = "system"
"""Services the cluster itself provides (workloads' services live in ``default``)."""
S3_SERVICE = ServiceKey(SYSTEM_NAMESPACE, "s3")
"""The object store's S3 API: every device serving it (``network/s3_service.py``)."""
S3_PORT = 3900
"""The S3 service's port: the default of ``agent --s3-listen``."""
ZONE_ALIASES: dict[ServiceKey, str] = {S3_SERVICE: "s3"}
"""Services also answered as ``<alias>.<zone>`` (``s3.cloudless``), besides their own name."""


@dataclass(frozen=True, order=True)
class ServicePort:
    port: int
    protocol: str = "tcp"
    name: str = ""  # SRV label; defaults to the number

    @property
    def label(self) -> str:
        return self.name or str(self.port)


@dataclass(frozen=True)
class ServiceSpec:
    key: ServiceKey
    ports: tuple[ServicePort, ...]
    stateful: bool = False  # replicas get their own DNS names (db-0.db.<ns>.cloudless)
    balance: str = "random"
    """``random`` per connection; ``source-hash``: one client address sticks to one endpoint;
    ``local-first``: a device with an endpoint of its own (in its container subnet) uses only
    those, any other device picks at random (the S3 service: a gateway next to each client)."""


def validate_service(spec: ServiceSpec) -> None:
    """ValidationError listing every bad field of ``spec``."""
    problems = [
        p
        for p in (
            label_problem("service.namespace", spec.key.namespace),
            label_problem("service.name", spec.key.name),
        )
        if p
    ]
    if spec.balance not in BALANCE:
        problems.append(f"service.balance: {spec.balance!r} is not one of {', '.join(BALANCE)}")
    if not spec.ports:
        problems.append("service.ports: a service needs at least one port")
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(spec.ports):
        if not isinstance(p.port, int) or isinstance(p.port, bool) or not 1 <= p.port <= 65535:
            problems.append(f"service.ports[{i}]: {p.port!r} is not a port 1..65535")
        if p.protocol not in PROTOCOLS:
            problems.append(f"service.ports[{i}].protocol: {p.protocol!r} is not tcp or udp")
        if p.name and (pr := label_problem(f"service.ports[{i}].name", p.name)):
            problems.append(pr)
        if (p.port, p.protocol) in seen:
            problems.append(f"service.ports[{i}]: {p.port}/{p.protocol} is listed twice")
        seen.add((p.port, p.protocol))
    if problems:
        raise ValidationError(problems)


def allocate_vip(
    services: IPv4Net,
    held: Mapping[ServiceKey, IPv4Addr],
    key: ServiceKey,
    requested: str | None = None,
) -> IPv4Addr:
    """The VIP of ``key`` given every service's current VIP (see the module rules)."""
    if key in held:
        if requested is not None and ipaddress.IPv4Address(requested) != held[key]:
            raise VipConflict(
                f"service {key} already holds VIP {held[key]}; a VIP does not change for a "
                f"service's life (delete and re-create the service to move it to {requested})"
            )
        return held[key]
    owners = {vip: k for k, vip in held.items()}
    if requested is not None:
        try:
            vip = ipaddress.IPv4Address(requested)
        except ValueError:
            raise ValidationError(f'service.vip: "{requested}" is not an IPv4 address') from None
        if vip not in services or vip in (services.network_address, services.broadcast_address):
            raise ValidationError(
                f"service.vip: {vip} is not a usable address of the service range {services}"
            )
        if vip in owners:
            raise VipConflict(f"service.vip: {vip} is already the VIP of service {owners[vip]}")
        return vip
    for vip in services.hosts():
        if vip not in owners:
            return vip
    raise AddressExhausted(
        f"every address of the service range {services} is a VIP already; widen "
        "network.service_cidr or delete unused services"
    )


@dataclass(frozen=True)
class ReplicaAddress:
    """One replica as the network sees it."""

    name: str  # e.g. "db-0"
    device_id: str
    ip: str
    running: bool = True
    ready: bool = True


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: IPv4Addr
    replica: str = field(compare=False)
    device_id: str = field(compare=False)


@dataclass(frozen=True)
class EndpointSet:
    key: ServiceKey
    endpoints: tuple[Endpoint, ...]
    total: int
    ignored: tuple[str, ...] = ()

    @property
    def ready(self) -> int:
        return len(self.endpoints)


def endpoint_set(
    key: ServiceKey,
    replicas: Iterable[ReplicaAddress],
    devices: Mapping[str, DeviceAddresses],
    unreachable: Mapping[str, str] | None = None,
) -> EndpointSet:
    """The endpoints of ``key`` (see the module rules); ``unreachable``: devices no other
    device can reach over the overlay (id -> why), whose replicas are left out."""
    eps: list[Endpoint] = []
    ignored: list[str] = []
    total = 0
    for r in replicas:
        total += 1
        if not (r.running and r.ready) or not r.ip:
            continue
        dev = devices.get(r.device_id)
        if dev is None:
            ignored.append(f"{r.name}: device {r.device_id} has no address slot")
            continue
        why = dev.owns(r.ip)
        if why is not None:
            ignored.append(f"{r.name}: reported address ignored, {why}")
            continue
        cut_off = (unreachable or {}).get(r.device_id)
        if cut_off is not None:
            ignored.append(f"{r.name}: device {r.device_id} is unreachable: {cut_off}")
            continue
        eps.append(Endpoint(ipaddress.IPv4Address(r.ip), r.name, r.device_id))
    return EndpointSet(key, tuple(sorted(eps)), total, tuple(ignored))


@dataclass(frozen=True)
class Service:
    """A service as agents program it: spec, VIP and current endpoints."""

    spec: ServiceSpec
    vip: IPv4Addr
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> ServiceKey:
        return self.spec.key
