"""Nebula's admin output parsed (1.6, 1.9 and 1.10 formats), NAT types, paths and reachability
decided from lighthouse views and agents' reports (tables), the heartbeat field's refusals.

Worked addresses: lighthouse 100.127.255.254 on the public switch; d1 100.64.0.2 public at
192.168.77.11; d3 100.64.0.4 behind a port-preserving NAT (192.168.88.10 inside, 192.168.77.253
outside); d4 100.64.0.5 behind a symmetric NAT (192.168.99.10 inside, 192.168.77.254 outside).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.network.errors import NetworkConfigError, NetworkEdgeError
from cloudless.network.overlay_state import (
    Advertised,
    LighthouseView,
    OverlayPath,
    OverlayReport,
    Sighting,
    Tunnel,
    classify,
    lighthouse_missing_s,
    nat_type,
    parse_addrmap,
    parse_hostmap,
    reachability,
    report_from_pb,
    report_to_pb,
)

LH, D1, D3, D4 = "100.127.255.254", "100.64.0.2", "100.64.0.4", "100.64.0.5"


def host16(
    ip: str, remote: dict[str, Any] | None, relays: list[str] | None = None
) -> dict[str, Any]:
    """One hostmap entry as Nebula 1.6 prints it."""
    return {
        "vpnIp": ip,
        "localIndex": 1,
        "remoteIndex": 2,
        "remoteAddrs": [remote] if remote else [],
        "cachedPackets": 0,
        "cert": {"details": {"name": "x"}},
        "messageCounter": 4,
        "currentRemote": remote,
        "currentRelaysToMe": relays or [],
        "currentRelaysThroughMe": [],
    }


HOSTMAP_16 = json.dumps(
    [
        host16(D4, None, [LH]),
        host16(LH, {"ip": "192.168.77.1", "port": 4242}),
        host16(D1, {"ip": "192.168.77.11", "port": 4242}),
    ]
)
HOSTMAP_19 = json.dumps(
    [
        {"vpnIp": LH, "currentRemote": "192.168.77.1:4242", "currentRelaysToMe": None},
        {"vpnIp": D4, "currentRemote": "", "currentRelaysToMe": [LH]},
    ]
)
HOSTMAP_110 = json.dumps(
    [{"vpnAddrs": [LH], "currentRemote": "192.168.77.1:4242", "currentRelaysToMe": []}]
)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # 1.6: objects, null when relayed; sorted by overlay IP
        (
            HOSTMAP_16,
            (
                Tunnel(D1, "192.168.77.11:4242"),
                Tunnel(D4, "", (LH,)),
                Tunnel(LH, "192.168.77.1:4242"),
            ),
        ),
        # 1.9: strings, "" when relayed, null lists
        (HOSTMAP_19, (Tunnel(D4, "", (LH,)), Tunnel(LH, "192.168.77.1:4242"))),
        # 1.10: vpnAddrs
        (HOSTMAP_110, (Tunnel(LH, "192.168.77.1:4242"),)),
        ("null", ()),
        ("[]", ()),
    ],
)
def test_parse_hostmap(text: str, want: tuple[Tunnel, ...]) -> None:
    assert parse_hostmap(text) == want


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Could not find tunnel", "did not print JSON"),
        ('{"vpnIp": "1.2.3.4"}', "expected a list"),
        ('["x"]', "list-hostmap[0]: not an object"),
        ('[{"vpnIp": "nope"}]', "list-hostmap[0].vpnIp"),
        ('[{"vpnAddrs": []}]', "list-hostmap[0].vpnAddrs"),
        ('[{"vpnIp": "1.2.3.4", "currentRemote": "1.2.3.4"}]', "currentRemote: '1.2.3.4'"),
        ('[{"vpnIp": "1.2.3.4", "currentRemote": {"ip": 5}}]', "currentRemote"),
        ('[{"vpnIp": "1.2.3.4", "currentRemote": "1.2.3.4:99999"}]', "not ip:port"),
        ('[{"vpnIp": "1.2.3.4", "currentRelaysToMe": ["x"]}]', "currentRelaysToMe[0]"),
    ],
)
def test_parse_hostmap_refuses_with_the_field(text: str, names: str) -> None:
    with pytest.raises(NetworkEdgeError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_hostmap(text)


def test_parse_addrmap() -> None:
    # 1.6 on a lighthouse: per device, its own cache with what it reported
    text = json.dumps(
        [
            {
                "vpnIp": D3,
                "addrs": {
                    D3: {
                        "reported": [{"ip": "192.168.88.10", "port": 4242}],
                        "relay": [LH],
                    }
                },
            },
            {"vpnIp": D1, "addrs": {D1: {"reported": ["192.168.77.11:4242"], "relay": None}}},
            {"vpnIp": D4, "addrs": None},
        ]
    )
    assert parse_addrmap(text) == {
        D3: ("192.168.88.10:4242",),
        D1: ("192.168.77.11:4242",),
        D4: (),
    }
    with pytest.raises(NetworkEdgeError, match=r"addrs\[x\].reported\[0\]"):
        parse_addrmap(json.dumps([{"vpnIp": D1, "addrs": {"x": {"reported": ["bad"]}}}]))


def view(
    seen: Mapping[str, str], reported: Mapping[str, tuple[str, ...]], lh: str = LH
) -> LighthouseView:
    return LighthouseView(
        lh,
        tuple(Sighting(d, a) for d, a in seen.items()),
        tuple(Advertised(d, a) for d, a in reported.items()),
    )


REPORTED: dict[str, tuple[str, ...]] = {
    D1: ("192.168.77.11:4242",),
    D3: ("192.168.88.10:4242",),
    D4: ("192.168.99.10:4242",),
}
LH_VIEW = view(
    {D1: "192.168.77.11:4242", D3: "192.168.77.253:4242", D4: "192.168.77.254:31001"}, REPORTED
)

NAT_CASES = [
    # (device, views, reports) -> type: rule applied
    (D1, [LH_VIEW], {}, "none"),  # the lighthouse sees its own address 192.168.77.11
    (D3, [LH_VIEW], {}, "nat"),  # one observer, mapped 192.168.77.253:4242 not its own
    # d1 reaches d3 directly and sees the same mapping as the lighthouse -> cone
    (D3, [LH_VIEW], {D1: OverlayReport((Tunnel(D3, "192.168.77.253:4242"),))}, "cone"),
    # d1 sees d4 at another port than the lighthouse does -> symmetric
    (D4, [LH_VIEW], {D1: OverlayReport((Tunnel(D4, "192.168.77.254:47810"),))}, "symmetric"),
    # two lighthouses see two mappings -> symmetric without any peer
    (
        D4,
        [LH_VIEW, view({D4: "192.168.77.254:5555"}, REPORTED, lh="100.127.255.253")],
        {},
        "symmetric",
    ),
    # a relayed tunnel is no observation: still one observer
    (D4, [LH_VIEW], {D3: OverlayReport((Tunnel(D4, "", (LH,)),))}, "nat"),
    # a LAN peer sees d3's own address: no NAT on that path, the lighthouse still sees one
    (D3, [LH_VIEW], {"100.64.0.9": OverlayReport((Tunnel(D3, "192.168.88.10:4242"),))}, "nat"),
    # nobody has a direct tunnel to it
    (D4, [view({}, REPORTED)], {}, "unknown"),
    # seen, but nobody knows what it reported
    (D3, [view({D3: "192.168.77.253:4242"}, {})], {}, "unknown"),
    # its own report does not observe itself
    (D1, [view({}, REPORTED)], {D1: OverlayReport((Tunnel(D1, "192.168.77.11:4242"),))}, "unknown"),
]


@pytest.mark.parametrize(("device", "views", "reports", "want"), NAT_CASES)
def test_nat_type(
    device: str, views: list[LighthouseView], reports: dict[str, OverlayReport], want: str
) -> None:
    got, why = nat_type(device, views, reports)
    assert got == want, why
    assert why


def test_symmetric_reason_names_both_observers() -> None:
    _, why = nat_type(D4, [LH_VIEW], {D1: OverlayReport((Tunnel(D4, "192.168.77.254:47810"),))})
    assert f"lighthouse {LH} sees 192.168.77.254:31001" in why
    assert f"peer {D1} sees 192.168.77.254:47810" in why


REACH_CASES = [
    # (device, its report, views) -> reachable
    (D3, None, [LH_VIEW], True),  # the lighthouse has a direct tunnel (so relays reach it)
    (D3, None, [view({}, {})], None),  # no report, no sighting: not known
    (D3, OverlayReport(error="ssh: connection refused"), [view({}, {})], None),
    # its own report shows a direct lighthouse tunnel
    (D3, OverlayReport((Tunnel(LH, "192.168.77.1:4242"),)), [], True),
    # a relayed tunnel to the lighthouse does not count
    (D3, OverlayReport((Tunnel(LH, "", ("x",)),), 45.0), [], False),
    # no lighthouse for 29 s < 30 s grace: not known yet; 30 s: unreachable
    (D3, OverlayReport((), 29.0), [view({}, {})], None),
    (D3, OverlayReport((), 30.0), [view({}, {})], False),
    # a tunnel to a peer that is not a lighthouse does not make it reachable for others
    (D3, OverlayReport((Tunnel(D1, "192.168.77.11:4242"),), 60.0), [view({}, {})], False),
]


@pytest.mark.parametrize(("device", "report", "views", "want"), REACH_CASES)
def test_reachability(
    device: str, report: OverlayReport | None, views: list[LighthouseView], want: bool | None
) -> None:
    got, why = reachability(device, report, views, [LH])
    assert got is want, why
    assert why


def test_classify_puts_it_together() -> None:
    reports = {
        D1: OverlayReport((Tunnel(D4, "192.168.77.254:47810"), Tunnel(LH, "192.168.77.1:4242"))),
        D4: OverlayReport(
            (
                Tunnel(D1, "192.168.77.11:4242"),
                Tunnel(D3, "", (LH,)),
                Tunnel(LH, "192.168.77.1:4242"),
            )
        ),
    }
    got = classify(D4, [LH_VIEW], reports, [LH])
    assert got.nat == "symmetric"
    assert got.reachable is True
    assert got.paths == (
        OverlayPath(D1, True, "192.168.77.11:4242"),
        OverlayPath(D3, False, LH),
        OverlayPath(LH, True, "192.168.77.1:4242"),
    )
    assert got.summary({D1: "d1", D3: "d3"}) == f"2 direct, 1 relayed (d3 via {LH})"


@pytest.mark.parametrize(
    ("tunnels", "since", "now", "want"),
    [
        # (hostmap, missing since, now) -> (missing since, missing for)
        ([Tunnel(LH, "192.168.77.1:4242")], 5.0, 50.0, (None, 0.0)),
        ([], None, 50.0, (50.0, 0.0)),  # first look without one starts the count
        ([], 20.0, 50.0, (20.0, 30.0)),  # 50 - 20
        ([Tunnel(LH, "", ("x",))], 20.0, 50.0, (20.0, 30.0)),  # relayed does not count
    ],
)
def test_lighthouse_missing(
    tunnels: list[Tunnel], since: float | None, now: float, want: tuple[float | None, float]
) -> None:
    assert lighthouse_missing_s(tunnels, [LH], since, now) == want


def test_report_round_trip() -> None:
    r = OverlayReport((Tunnel(D1, "192.168.77.11:4242"), Tunnel(D4, "", (LH,))), 12.5, "")
    assert report_from_pb(report_to_pb(r)) == r


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (pb.OverlayReport(tunnels=[pb.OverlayTunnel(peer="x")]), r"overlay.tunnels\[0\].peer"),
        (
            pb.OverlayReport(tunnels=[pb.OverlayTunnel(peer=D1, remote="1.2.3.4")]),
            r"overlay.tunnels\[0\].remote",
        ),
        (
            pb.OverlayReport(tunnels=[pb.OverlayTunnel(peer=D1, relays=["r"])]),
            r"overlay.tunnels\[0\].relays\[0\]",
        ),
        (pb.OverlayReport(lighthouses_missing_s=-1), "overlay.lighthouses_missing_s"),
        (pb.OverlayReport(lighthouses_missing_s=float("nan")), "overlay.lighthouses_missing_s"),
    ],
)
def test_report_from_pb_refuses_by_field(msg: pb.OverlayReport, field: str) -> None:
    with pytest.raises(NetworkConfigError, match=field):
        report_from_pb(msg)


def test_public_device_seen_behind_nat_is_named() -> None:
    o = classify(D3, [LH_VIEW], {}, [LH], public=True)
    assert o.nat == "nat" and "runs with --public" in o.nat_reason
    assert "--public" not in classify(D1, [LH_VIEW], {}, [LH], public=True).nat_reason
