"""Service validation, VIP allocation and endpoint sets."""

from __future__ import annotations

import ipaddress

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.errors import AddressExhausted, VipConflict
from cloudless.network.services import (
    ReplicaAddress,
    ServiceKey,
    ServicePort,
    ServiceSpec,
    allocate_vip,
    endpoint_set,
    validate_service,
)

IP = ipaddress.IPv4Address
RANGE = ipaddress.IPv4Network("10.43.0.0/16")
WEB = ServiceKey("default", "web")
DB = ServiceKey("default", "db")


def spec(
    name: str = "web",
    ns: str = "default",
    ports: tuple[ServicePort, ...] = (ServicePort(80),),
    **kw: object,
) -> ServiceSpec:
    return ServiceSpec(ServiceKey(ns, name), ports, **kw)  # type: ignore[arg-type]


BAD = [
    # (spec, fragment of the error)
    (spec(name="Web"), "service.name: 'Web' is not a DNS label"),
    (spec(name="a" * 64), "is not a DNS label"),  # 64 > 63
    (spec(name="-x"), "is not a DNS label"),
    (spec(ns="my_ns"), "service.namespace"),
    (spec(ports=()), "at least one port"),
    (spec(ports=(ServicePort(0),)), "service.ports[0]: 0 is not a port 1..65535"),
    (spec(ports=(ServicePort(65536),)), "65536 is not a port"),
    (spec(ports=(ServicePort(53, "sctp"),)), "'sctp' is not tcp or udp"),
    (spec(ports=(ServicePort(80), ServicePort(80))), "80/tcp is listed twice"),
    (spec(ports=(ServicePort(80, name="HTTP"),)), "service.ports[0].name"),
    (spec(balance="roundrobin"), "service.balance"),
]


@pytest.mark.parametrize(("s", "why"), BAD, ids=[b[1] for b in BAD])
def test_bad_service_refused(s: ServiceSpec, why: str) -> None:
    with pytest.raises(ValidationError) as e:
        validate_service(s)
    assert why in str(e.value)


def test_good_service_passes() -> None:
    validate_service(spec(ports=(ServicePort(80), ServicePort(80, "udp"), ServicePort(443))))


VIPS = [
    # (held, key, requested, expected)
    ({}, WEB, None, "10.43.0.1"),  # first host address (10.43.0.0 is the network)
    ({WEB: IP("10.43.0.1")}, DB, None, "10.43.0.2"),
    ({WEB: IP("10.43.0.1")}, WEB, None, "10.43.0.1"),  # stable
    ({WEB: IP("10.43.0.9")}, DB, "10.43.0.20", "10.43.0.20"),  # asked for and free
    ({WEB: IP("10.43.0.9")}, WEB, "10.43.0.9", "10.43.0.9"),  # asking for what it holds
    ({WEB: IP("10.43.0.2")}, DB, None, "10.43.0.1"),  # a freed lower address is reused
]


@pytest.mark.parametrize(("held", "key", "req", "want"), VIPS)
def test_allocate_vip(
    held: dict[ServiceKey, IP], key: ServiceKey, req: str | None, want: str
) -> None:
    assert str(allocate_vip(RANGE, held, key, req)) == want


VIP_BAD = [
    # (held, key, requested, error type, fragment)
    (
        {WEB: IP("10.43.0.5")},
        DB,
        "10.43.0.5",
        VipConflict,
        "already the VIP of service web.default",
    ),
    ({WEB: IP("10.43.0.5")}, WEB, "10.43.0.6", VipConflict, "VIP does not change"),
    ({}, WEB, "10.44.0.1", ValidationError, "not a usable address of the service range"),
    ({}, WEB, "10.43.255.255", ValidationError, "not a usable address"),  # broadcast
    ({}, WEB, "ten", ValidationError, "not an IPv4 address"),
]


@pytest.mark.parametrize(("held", "key", "req", "err", "why"), VIP_BAD)
def test_vip_refusals(
    held: dict[ServiceKey, IP], key: ServiceKey, req: str, err: type[Exception], why: str
) -> None:
    with pytest.raises(err, match=why):
        allocate_vip(RANGE, held, key, req)


def test_vip_range_exhausted() -> None:
    small = ipaddress.IPv4Network("10.43.0.0/30")  # 2 hosts: .1 and .2
    held = {WEB: IP("10.43.0.1"), DB: IP("10.43.0.2")}
    with pytest.raises(AddressExhausted, match=r"widen network\.service_cidr"):
        allocate_vip(small, held, ServiceKey("default", "x"))


PLAN = AddressPlanConfig().plan()
DEVICES = {"d0": PLAN.addresses(0), "d1": PLAN.addresses(1)}  # 10.42.0.0/24, 10.42.1.0/24

EPS = [
    # (replicas, endpoint ips, ready/total, ignored fragment)
    ([ReplicaAddress("w-0", "d0", "10.42.0.5")], ["10.42.0.5"], (1, 1), None),
    (
        [
            ReplicaAddress("w-0", "d1", "10.42.1.9"),
            ReplicaAddress("w-1", "d0", "10.42.0.5"),
        ],
        ["10.42.0.5", "10.42.1.9"],  # sorted by address, not by replica
        (2, 2),
        None,
    ),
    ([ReplicaAddress("w-0", "d0", "10.42.0.5", ready=False)], [], (0, 1), None),
    ([ReplicaAddress("w-0", "d0", "10.42.0.5", running=False)], [], (0, 1), None),
    ([ReplicaAddress("w-0", "d0", "")], [], (0, 1), None),  # no address yet
    (
        [ReplicaAddress("w-0", "d0", "10.42.1.5")],  # d1's subnet, reported by d0
        [],
        (0, 1),
        "w-0: reported address ignored, 10.42.1.5 is outside",
    ),
    ([ReplicaAddress("w-0", "d9", "10.42.9.5")], [], (0, 1), "device d9 has no address slot"),
]


@pytest.mark.parametrize(("reps", "ips", "counts", "ignored"), EPS)
def test_endpoint_set(
    reps: list[ReplicaAddress], ips: list[str], counts: tuple[int, int], ignored: str | None
) -> None:
    es = endpoint_set(WEB, reps, DEVICES)
    assert [str(e.ip) for e in es.endpoints] == ips
    assert (es.ready, es.total) == counts
    if ignored is None:
        assert es.ignored == ()
    else:
        assert any(ignored in i for i in es.ignored)
