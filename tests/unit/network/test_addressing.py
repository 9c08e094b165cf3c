"""The address plan, with the slot arithmetic beside each case.

Slot k: overlay IP = overlay network + k + 1; container subnet = k-th /prefix of the range.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.network.addressing import AddressPlanConfig, allocate, release
from cloudless.network.errors import AddressExhausted, NetworkConfigError

PLAN = AddressPlanConfig().plan()

SLOTS = [
    # (slot, overlay ip, container subnet, gateway)
    (0, "100.64.0.1", "10.42.0.0/24", "10.42.0.1"),  # 100.64.0.0 + 0 + 1
    (1, "100.64.0.2", "10.42.1.0/24", "10.42.1.1"),  # 10.42.0.0 + 1 * 256
    (255, "100.64.1.0", "10.42.255.0/24", "10.42.255.1"),  # 100.64.0.0 + 256 = 100.64.1.0
]


@pytest.mark.parametrize(("slot", "overlay", "subnet", "gw"), SLOTS)
def test_slot_addresses(slot: int, overlay: str, subnet: str, gw: str) -> None:
    a = PLAN.addresses(slot)
    assert (str(a.overlay_ip), str(a.container_subnet), str(a.gateway)) == (overlay, subnet, gw)
    assert a.overlay_cidr == f"{overlay}/10"


SIZES = [
    # (config kwargs, slots)
    ({}, 256),  # /16 split in /24s = 2^8; overlay /10 has 4M addresses
    ({"container_prefix": 26}, 1024),  # 2^(26-16)
    ({"overlay_cidr": "100.64.0.0/29"}, 5),  # 8 addresses - network - broadcast - lighthouse
    ({"container_cidr": "10.42.0.0/23"}, 2),  # two /24s
]


@pytest.mark.parametrize(("kw", "slots"), SIZES)
def test_slot_count(kw: dict[str, object], slots: int) -> None:
    assert AddressPlanConfig(**kw).plan().slots == slots  # type: ignore[arg-type]


BAD = [
    # (config kwargs, words the error must contain)
    ({"overlay_cidr": "nonsense"}, ["network.overlay_cidr", "not an IPv4 network"]),
    ({"container_cidr": "10.42.0.1/16"}, ["network.container_cidr", "host bits set"]),
    ({"service_cidr": "fd00::/64"}, ["network.service_cidr", "IPv6"]),
    ({"service_cidr": "127.0.0.0/8"}, ["loopback"]),
    ({"service_cidr": "10.42.128.0/17"}, ["overlaps", "network.container_cidr"]),
    ({"overlay_cidr": "10.0.0.0/8"}, ["network.overlay_cidr 10.0.0.0/8 overlaps"]),
    ({"avoid": ("10.42.7.0/24",)}, ["overlaps 10.42.7.0/24, which is already in use"]),
    ({"container_prefix": 29}, ["/29 leaves fewer than 13"]),
    ({"container_prefix": 8}, ["larger than network.container_cidr"]),
    ({"container_cidr": "10.42.0.0/24"}, ["holds one /24"]),  # 2^(24-24) = 1 slot
    ({"overlay_cidr": "100.64.0.0/31"}, ["room for fewer than 2 devices"]),  # 2 - 2 = 0
    ({"overlay_cidr": "100.64.0.0/30"}, ["room for fewer than 2 devices"]),  # 4 - 3 = 1
    ({"lighthouse": "coord:4242"}, ["network.lighthouse", "not IPV4:PORT"]),
    ({"lighthouse": "192.168.1.10:0"}, ["network.lighthouse", "not 1..65535"]),
    ({"lighthouse": "192.168.1.10"}, ["network.lighthouse"]),
    ({"service_cidr": "10.43.0.0/31"}, ["too small for services"]),
    ({"container_prefix": True}, ["not a prefix length"]),
]


@pytest.mark.parametrize(("kw", "words"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_ranges_refused_with_reason(kw: dict[str, object], words: list[str]) -> None:
    with pytest.raises(NetworkConfigError) as e:
        AddressPlanConfig(**kw).plan()  # type: ignore[arg-type]
    for w in words:
        assert w in str(e.value)


def test_every_problem_listed() -> None:
    with pytest.raises(NetworkConfigError) as e:
        AddressPlanConfig(overlay_cidr="x", service_cidr="y").plan()
    assert len(e.value.problems) == 2


ALLOC = [
    # (held slots, device, expected slot)
    ({}, "a", 0),  # lowest free
    ({"a": 0}, "b", 1),
    ({"a": 0, "b": 1}, "a", 0),  # stable: a keeps its slot
    ({"a": 0, "c": 2}, "b", 1),  # a hole (b's slot, freed) is reused first
    ({"a": 5}, "a", 5),  # whatever slot a holds
]


@pytest.mark.parametrize(("held", "device", "slot"), ALLOC)
def test_allocate(held: dict[str, int], device: str, slot: int) -> None:
    assert allocate(PLAN, held, device).slot == slot


def test_exhausted_names_the_fix() -> None:
    plan = AddressPlanConfig(container_cidr="10.42.0.0/23").plan()  # 2 slots
    with pytest.raises(AddressExhausted, match=r"widen network\.container_cidr"):
        allocate(plan, {"a": 0, "b": 1}, "c")


def test_release_frees_the_slot() -> None:
    held = release({"a": 0, "b": 1}, "a")
    assert held == {"b": 1}
    assert allocate(PLAN, held, "c").slot == 0


OWNS = [
    # (ip, reason fragment or None); device slot 1 = 10.42.1.0/24, gateway 10.42.1.1
    ("10.42.1.7", None),
    ("10.42.2.7", "outside this device's container subnet 10.42.1.0/24"),
    ("10.42.1.1", "bridge's own address"),
    ("10.42.1.255", "broadcast"),
    ("banana", "not an IPv4 address"),
]


@pytest.mark.parametrize(("ip", "why"), OWNS)
def test_reported_address_checked(ip: str, why: str | None) -> None:
    got = PLAN.addresses(1).owns(ip)
    assert got is None if why is None else why in (got or "")


def test_routes_cover_every_other_slot() -> None:
    plan = AddressPlanConfig(overlay_cidr="100.64.0.0/29").plan()  # 5 slots (lighthouse .6)
    routes = plan.all_routes(own_slot=2)
    assert len(routes) == 4
    assert (ipaddress.IPv4Network("10.42.0.0/24"), ipaddress.IPv4Address("100.64.0.1")) in routes
    assert all(str(net) != "10.42.2.0/24" for net, _ in routes)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=60))
def test_allocation_is_stable_and_unique(ops: list[tuple[bool, int]]) -> None:
    """Any sequence of joins and removals: no two devices share a slot, and a device keeps
    its slot until it is removed."""
    plan = AddressPlanConfig(container_cidr="10.42.0.0/20").plan()  # 16 slots >= 10 devices
    held: dict[str, int] = {}
    for join, n in ops:
        dev = f"d{n}"
        if join:
            before = held.get(dev)
            held[dev] = allocate(plan, held, dev).slot
            assert before is None or held[dev] == before
        else:
            held = release(held, dev)
        assert len(set(held.values())) == len(held)


STALE = [
    # (attached, leases, live, stale)
    (["a", "b"], {"10.42.1.2": "a", "10.42.1.3": "b"}, {"a", "b"}, []),
    (["a", "b"], {"10.42.1.2": "a", "10.42.1.3": "b"}, {"a"}, ["b"]),
    ([], {"10.42.1.9": "c"}, set(), ["c"]),  # a lease without a cached result: still DEL
    (["d"], {}, set(), ["d"]),
]


@pytest.mark.parametrize(("attached", "leases", "live", "stale"), STALE)
def test_stale_containers(
    attached: list[str], leases: dict[str, str], live: set[str], stale: list[str]
) -> None:
    from cloudless.network.cni import stale_containers

    assert stale_containers(attached, leases, live) == stale


FLAGS = [
    # (flag text, expected config or error fragment)
    ("", None),
    ("on", AddressPlanConfig()),
    (
        "containers=10.50.0.0/16,prefix=26",
        AddressPlanConfig(container_cidr="10.50.0.0/16", container_prefix=26),
    ),
    ("services=10.60.0.0/20", AddressPlanConfig(service_cidr="10.60.0.0/20")),
    ("bogus=1", "is not key=value with a key among"),
    ("containers", "is not key=value"),
    ("prefix=big", "prefix='big' is not a number"),
    ("services=10.42.0.0/24", "overlaps"),  # checked at once, not at first use
]


@pytest.mark.parametrize(("text", "want"), FLAGS)
def test_network_flag(text: str, want: object) -> None:
    from cloudless.network.addressing import parse_network_flag

    if isinstance(want, str):
        with pytest.raises(NetworkConfigError, match=want):
            parse_network_flag(text)
    else:
        assert parse_network_flag(text) == want
