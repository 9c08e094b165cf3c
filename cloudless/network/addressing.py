"""The address plan: which overlay IP and which container subnet each device gets.

Rules:

* A device holds one **slot** ``k`` for its whole life. Slot ``k`` means overlay IP
  ``overlay.network + k + 1`` and the ``k``-th ``/container_prefix`` of ``container_cidr``
  (gateway = its first host address, on the device's bridge). Because a slot fixes both, every
  device can route *every* slot's container subnet through the overlay from the start
  (``all_routes``): Nebula 1.6 ignores ``unsafe_routes`` changes on reload, so the routes never
  need to change while devices come and go.
* The overlay's last usable address (``lighthouse_ip``) is the coordinator's lighthouse; no
  slot ever takes it.
* ``allocate`` is stable: a device that already holds a slot gets the same one back. A new device
  gets the lowest free slot. ``release`` frees the slot of a removed device.
* ``AddressPlanConfig.plan()`` refuses unusable ranges (not IPv4, host bits set, overlapping each
  other or a range to avoid, too small for two devices, per-device subnets too small for
  containers) with an error naming the field and the fix. Nothing here touches the machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from cloudless.network.errors import AddressExhausted, NetworkConfigError

IPv4Net = ipaddress.IPv4Network
IPv4Addr = ipaddress.IPv4Address

DEFAULT_OVERLAY = "100.64.0.0/10"
DEFAULT_CONTAINERS = "10.42.0.0/16"
DEFAULT_SERVICES = "10.43.0.0/16"
MIN_SLOTS = 2
MAX_CONTAINER_PREFIX = 28  # 14 host addresses: the gateway plus 13 containers


def parse_net(field: str, value: str) -> IPv4Net:
    """``value`` as an IPv4 network, or a NetworkConfigError naming ``field`` and the fix."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        hint = "host bits set" if "host bits" in str(e) else "not an IPv4 network"
        raise NetworkConfigError(
            f'{field}: "{value}" is {hint}; write a network like '
            + _EXAMPLES.get(field, "10.0.0.0/16")
        ) from None
    if not isinstance(net, IPv4Net):
        raise NetworkConfigError(f'{field}: "{value}" is IPv6; only IPv4 ranges are supported')
    if net.is_loopback or net.is_multicast or net.is_link_local or net.is_unspecified:
        raise NetworkConfigError(
            f"{field}: {net} is loopback/multicast/link-local; use a private or CGNAT range"
        )
    return net


_EXAMPLES = {
    "network.overlay_cidr": DEFAULT_OVERLAY,
    "network.container_cidr": DEFAULT_CONTAINERS,
    "network.service_cidr": DEFAULT_SERVICES,
}


@dataclass(frozen=True)
class DeviceAddresses:
    """What one slot gives a device."""

    slot: int
    overlay_ip: IPv4Addr
    overlay_net: IPv4Net
    container_subnet: IPv4Net

    @property
    def gateway(self) -> IPv4Addr:
        """The bridge's address: the container subnet's first host address."""
        return self.container_subnet.network_address + 1

    @property
    def overlay_cidr(self) -> str:
        """The overlay IP with the overlay's prefix, as nebula-cert's ``-ip`` wants it."""
        return f"{self.overlay_ip}/{self.overlay_net.prefixlen}"

    def owns(self, ip: str) -> str | None:
        """None when ``ip`` is a container address of this device, else why not."""
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            return f'"{ip}" is not an IPv4 address'
        if addr not in self.container_subnet:
            return f"{addr} is outside this device's container subnet {self.container_subnet}"
        if addr in (self.container_subnet.network_address, self.container_subnet.broadcast_address):
            return f"{addr} is the network or broadcast address of {self.container_subnet}"
        if addr == self.gateway:
            return f"{addr} is the bridge's own address"
        return None


MAX_LIGHTHOUSES = 7  # coordinators running a lighthouse (an HA cluster has 3 or 5)


@dataclass(frozen=True)
class AddressPlan:
    """A validated set of ranges; see the module docstring for the slot rule."""

    overlay: IPv4Net
    containers: IPv4Net
    container_prefix: int
    services: IPv4Net

    @property
    def slots(self) -> int:
        subnets = 1 << (self.container_prefix - self.containers.prefixlen)
        return min(subnets, self.overlay.num_addresses - 3)  # network, broadcast, lighthouse

    @property
    def lighthouse_ip(self) -> IPv4Addr:
        """The first coordinator's overlay address: the overlay's last usable one."""
        return self.overlay.broadcast_address - 1

    def lighthouse_ips(self) -> list[IPv4Addr]:
        """Addresses for coordinators' lighthouses, from the top down (at most
        ``MAX_LIGHTHOUSES``), never one a device slot could hold. Worked: 100.64.0.0/10 ->
        100.127.255.254, .253, ... .248; a /29 overlay with 5 slots (.1-.5) -> only .6."""
        first_free = int(self.overlay.network_address) + self.slots + 1
        top = int(self.overlay.broadcast_address) - 1
        return [
            ipaddress.IPv4Address(a)
            for a in range(top, max(first_free, top - MAX_LIGHTHOUSES + 1) - 1, -1)
        ]

    def addresses(self, slot: int) -> DeviceAddresses:
        if not 0 <= slot < self.slots:
            raise AddressExhausted(f"slot {slot} is outside 0..{self.slots - 1}")
        size = 1 << (32 - self.container_prefix)
        subnet = IPv4Net(
            (int(self.containers.network_address) + slot * size, self.container_prefix)
        )
        return DeviceAddresses(slot, self.overlay.network_address + slot + 1, self.overlay, subnet)

    def all_routes(self, own_slot: int | None = None) -> list[tuple[IPv4Net, IPv4Addr]]:
        """``(container subnet, via overlay IP)`` for every slot but ``own_slot``."""
        out = []
        for k in range(self.slots):
            if k != own_slot:
                a = self.addresses(k)
                out.append((a.container_subnet, a.overlay_ip))
        return out

    def cluster_ranges(self) -> tuple[IPv4Net, IPv4Net, IPv4Net]:
        """Destinations inside the cluster (never masqueraded)."""
        return (self.containers, self.overlay, self.services)


@dataclass(frozen=True)
class AddressPlanConfig:
    """The cluster's ranges as the operator writes them (defaults from the design)."""

    overlay_cidr: str = DEFAULT_OVERLAY
    container_cidr: str = DEFAULT_CONTAINERS
    container_prefix: int = 24
    service_cidr: str = DEFAULT_SERVICES
    avoid: tuple[str, ...] = ()  # ranges already in use (the LAN, a lab), checked for overlap
    # "HOST:PORT" devices reach the coordinator's Nebula lighthouse at ("": no lighthouse)
    lighthouse: str = ""

    def plan(self) -> AddressPlan:
        """The validated plan, or a NetworkConfigError listing every problem found."""
        problems: list[str] = []
        nets: dict[str, IPv4Net] = {}
        for field, value in (
            ("network.overlay_cidr", self.overlay_cidr),
            ("network.container_cidr", self.container_cidr),
            ("network.service_cidr", self.service_cidr),
        ):
            try:
                nets[field] = parse_net(field, value)
            except NetworkConfigError as e:
                problems.extend(e.problems)
        avoid: list[tuple[str, IPv4Net]] = []
        for i, value in enumerate(self.avoid):
            try:
                avoid.append((value, parse_net(f"network.avoid[{i}]", value)))
            except NetworkConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise NetworkConfigError(problems)
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    problems.append(
                        f"{a} {nets[a]} overlaps {b} {nets[b]}; the three ranges must be disjoint"
                    )
            for value, net in avoid:
                if nets[a].overlaps(net):
                    problems.append(f"{a} {nets[a]} overlaps {value}, which is already in use")
        containers = nets["network.container_cidr"]
        p = self.container_prefix
        if not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 32:
            problems.append(f"network.container_prefix: {p!r} is not a prefix length 1..32")
        elif p > MAX_CONTAINER_PREFIX:
            problems.append(
                f"network.container_prefix: /{p} leaves fewer than 13 container addresses "
                f"per device; use /{MAX_CONTAINER_PREFIX} or shorter (default /24)"
            )
        elif p < containers.prefixlen:
            problems.append(
                f"network.container_prefix: /{p} is larger than network.container_cidr "
                f"{containers}; use a longer prefix such as /{min(containers.prefixlen + 8, 28)}"
            )
        elif (1 << (p - containers.prefixlen)) < MIN_SLOTS:
            problems.append(
                f"network.container_cidr {containers} holds one /{p}; it must hold at least "
                f"{MIN_SLOTS} devices' subnets (widen it or lengthen container_prefix)"
            )
        overlay = nets["network.overlay_cidr"]
        if overlay.num_addresses - 3 < MIN_SLOTS:
            problems.append(
                f"network.overlay_cidr {overlay} has room for fewer than {MIN_SLOTS} devices; "
                "use /29 or wider (default 100.64.0.0/10)"
            )
        services = nets["network.service_cidr"]
        if services.num_addresses < 4:
            problems.append(
                f"network.service_cidr {services} is too small for services; use /29 or wider"
            )
        why = lighthouse_problem(self.lighthouse)
        if why:
            problems.append(why)
        if problems:
            raise NetworkConfigError(problems)
        return AddressPlan(overlay, containers, p, services)


def lighthouse_problem(value: str) -> str | None:
    """None when ``value`` is "" or "HOST:PORT" with an IPv4 host, else why not."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return (
            f"network.lighthouse: {value!r} is not IPV4:PORT (the address devices reach this "
            "coordinator's lighthouse at, e.g. 192.168.1.10:4242)"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"network.lighthouse: port {port!r} is not 1..65535"
    return None


def allocate(plan: AddressPlan, slots: Mapping[str, int], device_id: str) -> DeviceAddresses:
    """The addresses of ``device_id`` given every device's current slot.

    Stable: a device in ``slots`` keeps its slot. Otherwise the lowest slot nobody holds;
    AddressExhausted (naming the fix) when every slot is held.
    """
    if device_id in slots:
        return plan.addresses(slots[device_id])
    held = set(slots.values())
    for k in range(plan.slots):
        if k not in held:
            return plan.addresses(k)
    raise AddressExhausted(
        f"all {plan.slots} device address slots are in use; remove a node or widen "
        f"network.container_cidr ({plan.containers}) / network.overlay_cidr ({plan.overlay})"
    )


def release(slots: Mapping[str, int], device_id: str) -> dict[str, int]:
    """``slots`` without ``device_id`` (its slot becomes free for the next new device)."""
    return {d: k for d, k in slots.items() if d != device_id}


_FLAG_KEYS = {
    "overlay": "overlay_cidr",
    "containers": "container_cidr",
    "prefix": "container_prefix",
    "services": "service_cidr",
    "lighthouse": "lighthouse",
}


def parse_network_flag(text: str) -> AddressPlanConfig | None:
    """``--network`` as a config: "" is off, "on" the defaults, else ``key=value,...`` with keys
    overlay, containers, prefix, services. The ranges are validated here (plan())."""
    text = text.strip()
    if not text:
        return None
    if text == "on":
        cfg = AddressPlanConfig()
        cfg.plan()
        return cfg
    fields: dict[str, object] = {}
    for part in text.split(","):
        if part.strip() == "on":  # "on,lighthouse=...": the defaults plus the given keys
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in _FLAG_KEYS:
            raise NetworkConfigError(
                f"--network: {part.strip()!r} is not key=value with a key among "
                f"{', '.join(_FLAG_KEYS)} (or pass 'on' for the defaults)"
            )
        if key == "prefix":
            if not value.isdigit():
                raise NetworkConfigError(f"--network: prefix={value!r} is not a number like 24")
            fields[_FLAG_KEYS[key]] = int(value)
        else:
            fields[_FLAG_KEYS[key]] = value
    cfg = AddressPlanConfig(**fields)  # type: ignore[arg-type]
    cfg.plan()
    return cfg
