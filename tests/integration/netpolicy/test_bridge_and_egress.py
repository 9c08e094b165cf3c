"""Same-device and egress policy on a real kernel: a "device" namespace with a bridge holding
three "container" namespaces (as the agent's ``cl0``), one container routed on its own subnet,
and an "outside" namespace standing in for an address beyond the cluster.

* Same device: two containers on one bridge talk at layer 2, past the forward hook (the lab
  turns the host-wide ``bridge-nf-call-iptables`` off, as where ``br_netfilter`` is not
  loaded). With the table alone a denied connection between them still succeeds; once the
  bridge hands its frames to netfilter (``NftPolicyTable(bridge=...)``), it fails and the
  allowed ones work.
* Egress: a workload limited by an egress policy reaches the outside network only on the
  port its rule allows, another workload (no egress policy) reaches it on any port.

Every outcome is compared with ``decide_both`` / ``decide_egress``."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from cloudless.network.lab import CLONE_NEWNET, bind_in_netns
from cloudless.network.netpolicy import WorkloadRef, decide_both, decide_egress, parse_policy
from cloudless.network.netpolicy_nft import Endpoint, render
from cloudless.network.nft_apply import NftPolicyTable

PREFIX = "cl18eg"
DEV = f"{PREFIX}-dev"
BRIDGE = f"{PREFIX}br"
OUT_IP = "192.0.2.2"
# namespace suffix -> (workload, address); web, api, db share the bridge (10.219.1.0/24)
CONTAINERS = {
    "web": (WorkloadRef("web", "web", {"app": "web"}), "10.219.1.2"),
    "api": (WorkloadRef("api", "web", {"app": "api"}), "10.219.1.3"),
    "db": (WorkloadRef("db", "db", {"app": "db"}), "10.219.1.4"),
    "job": (WorkloadRef("batch", "jobs", {"app": "batch"}), "10.219.2.2"),  # routed
}
POLICIES = [
    parse_policy(
        {
            "name": "db-in",
            "namespace": "db",
            "ingress": [{"from": [{"namespace": "web", "selector": {"app": "api"}}]}],
        }
    ),
    parse_policy(
        {
            "name": "web-out",
            "namespace": "web",
            "selector": {"app": "web"},
            "egress": [
                {"to": [{"namespace": "db"}]},
                {"to": [{"cidr": "192.0.2.0/24"}], "ports": [{"port": 443}]},
            ],
        }
    ),
]


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _cleanup() -> None:
    for ns in [DEV, f"{PREFIX}-out", *(f"{PREFIX}-{n}" for n in CONTAINERS)]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _container(name: str, ip: str, gateway: str, link: list[str]) -> None:
    ns = f"{PREFIX}-{name}"
    host = f"{PREFIX}{name}"
    _sh("ip", "netns", "add", ns)
    _sh("ip", "-n", ns, "link", "set", "lo", "up")
    _sh("ip", "-n", DEV, "link", "add", host, "type", "veth", "peer", "eth0", "netns", ns)
    _sh("ip", "-n", DEV, *link, "dev", host)
    _sh("ip", "-n", DEV, "link", "set", host, "up")
    _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
    _sh("ip", "-n", ns, "link", "set", "eth0", "up")
    _sh("ip", "-n", ns, "route", "add", "default", "via", gateway)


@pytest.fixture
def lab() -> Iterator[None]:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    _cleanup()
    try:
        _sh("ip", "netns", "add", DEV)
        _sh("ip", "-n", DEV, "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", DEV, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # as on a host where bridges do not hand frames to netfilter (br_netfilter not
        # loaded, or this sysctl off): only the per-bridge switch the agent sets turns it on
        _sh("ip", "netns", "exec", DEV, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
        _sh("ip", "-n", DEV, "link", "add", BRIDGE, "type", "bridge")
        _sh("ip", "-n", DEV, "addr", "add", "10.219.1.1/24", "dev", BRIDGE)
        _sh("ip", "-n", DEV, "link", "set", BRIDGE, "up")
        for name in ("web", "api", "db"):
            _container(name, CONTAINERS[name][1], "10.219.1.1", ["link", "set", "master", BRIDGE])
        _container("job", CONTAINERS["job"][1], "10.219.2.1", ["addr", "add", "10.219.2.1/24"])
        _container("out", OUT_IP, "192.0.2.1", ["addr", "add", "192.0.2.1/24"])
        yield
    finally:
        _cleanup()


def _connects(src: str, dst_ip: str, port: int) -> bool:
    """Whether a TCP connection from namespace ``src`` completes within 0.5 s."""
    out: list[bool] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{PREFIX}-{src}", os.O_RDONLY)
        try:
            libc.setns(target, CLONE_NEWNET)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            libc.setns(own, CLONE_NEWNET)
            s.settimeout(0.5)
            try:
                s.connect((dst_ip, port))
                out.append(True)
            except OSError:
                out.append(False)
            finally:
                s.close()
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out == [True]


SAME_BRIDGE = [  # (source, destination, port)
    ("web", "db", 5432),  # web-out allows db, but db-in admits only app=api: denied
    ("api", "db", 5432),  # allowed by db-in (api has no egress policy)
    ("web", "api", 80),  # web-out does not name api: denied by egress, same bridge
    ("api", "web", 80),  # same namespace, web has no ingress policy: allowed
]
ROUTED = [("job", "db", 5432)]  # across subnets: denied by db-in (jobs not admitted)
OUTSIDE = [  # (source, port)
    ("web", 443),  # web-out: 192.0.2.0/24 on 443
    ("web", 80),  # not on 80
    ("api", 80),  # api has no egress policy: open
]


def _ip(name: str) -> str:
    return CONTAINERS[name][1]


async def test_same_bridge_and_egress(lab: None) -> None:
    listeners = [
        bind_in_netns(f"{PREFIX}-{dst}", socket.SOCK_STREAM, ("0.0.0.0", port))
        for dst, port in {(d, p) for _, d, p in SAME_BRIDGE + ROUTED}
    ]
    listeners += [
        bind_in_netns(f"{PREFIX}-out", socket.SOCK_STREAM, ("0.0.0.0", port))
        for port in {p for _, p in OUTSIDE}
    ]
    try:
        every = [(s, _ip(d), p) for s, d, p in SAME_BRIDGE + ROUTED]
        every += [(s, OUT_IP, p) for s, p in OUTSIDE]
        assert all(_connects(*c) for c in every)  # no table: everything connects

        endpoints = [Endpoint(ip, wl) for wl, ip in CONTAINERS.values()]
        text = render(POLICIES, endpoints, endpoints, "10.219.0.0/16")
        netns = ["ip", "netns", "exec", DEV]
        # the table alone: the bridge does not hand frames to netfilter, so a denied
        # connection between two containers on it still succeeds; routed ones are policed
        await NftPolicyTable(host_argv=netns).apply(text)
        assert _connects("web", _ip("db"), 5432)
        assert not _connects("job", _ip("db"), 5432)

        await NftPolicyTable(host_argv=netns, bridge=BRIDGE).apply(text)
        for src, dst, port in SAME_BRIDGE + ROUTED:
            want = decide_both(
                CONTAINERS[src][0], CONTAINERS[dst][0], _ip(dst), "tcp", port, POLICIES
            )
            got = _connects(src, _ip(dst), port)
            assert got == want.allowed, f"{src} -> {dst}:{port}: {want.reason}"
        for src, port in OUTSIDE:
            want = decide_egress(CONTAINERS[src][0], OUT_IP, None, "tcp", port, POLICIES)
            got = _connects(src, OUT_IP, port)
            assert got == want.allowed, f"{src} -> outside:{port}: {want.reason}"
        # the checks above hold both outcomes (a test that could not fail would not)
        outcomes = {_connects("web", _ip("db"), 5432), _connects("api", _ip("db"), 5432)}
        assert outcomes == {True, False}
    finally:
        for s in listeners:
            s.close()
        await asyncio.sleep(0)
