"""The compiled network-policy table on a real kernel: a "device" namespace routing between
five "container" namespaces (veth pairs standing in for container interfaces). Before the
table every connection succeeds; after ``nft -f`` of ``netpolicy_nft.render``, exactly the
connections ``netpolicy.decide`` allows do, and the others time out (dropped)."""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from cloudless.network.lab import CLONE_NEWNET, bind_in_netns
from cloudless.network.netpolicy import WorkloadRef, decide, parse_policy
from cloudless.network.netpolicy_nft import Endpoint, render

PREFIX = "cl18np"
DEV = f"{PREFIX}-dev"
CONTAINERS = {  # namespace suffix -> (workload, index in 10.218.<i>.0/24)
    "web": (WorkloadRef("web", "web", {"app": "web", "tier": "front"}), 1),
    "adm": (WorkloadRef("admin", "web", {"app": "admin"}), 2),
    "db": (WorkloadRef("db", "db", {"app": "db"}), 3),
    "cache": (WorkloadRef("cache", "db", {"app": "cache"}), 4),
    "job": (WorkloadRef("batch", "jobs", {"app": "batch"}), 5),
}
POLICIES = [
    parse_policy(
        {
            "name": "db-from-web",
            "namespace": "db",
            "selector": {"app": "db"},
            "ingress": [
                {
                    "from": [{"namespace": "web", "selector": {"tier": "front"}}],
                    "ports": [{"port": 5432}],
                }
            ],
        }
    ),
    parse_policy(
        {
            "name": "no-batch",
            "namespace": "db",
            "ingress": [{"action": "deny", "from": [{"namespace": "jobs"}]}],
        }
    ),
]


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _ip(name: str) -> str:
    return f"10.218.{CONTAINERS[name][1]}.2"


def _cleanup() -> None:
    for ns in [DEV, *(f"{PREFIX}-{n}" for n in CONTAINERS)]:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def lab() -> Iterator[None]:
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    _cleanup()
    try:
        _sh("ip", "netns", "add", DEV)
        _sh("ip", "-n", DEV, "link", "set", "lo", "up")
        _sh("ip", "netns", "exec", DEV, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for name, (_, i) in CONTAINERS.items():
            ns = f"{PREFIX}-{name}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            host = f"{PREFIX}{i}"
            _sh("ip", "-n", DEV, "link", "add", host, "type", "veth", "peer", "eth0", "netns", ns)
            _sh("ip", "-n", DEV, "addr", "add", f"10.218.{i}.1/24", "dev", host)
            _sh("ip", "-n", DEV, "link", "set", host, "up")
            _sh("ip", "-n", ns, "addr", "add", f"10.218.{i}.2/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "route", "add", "default", "via", f"10.218.{i}.1")
        yield
    finally:
        _cleanup()


def _connects(src: str, dst_ip: str, port: int) -> bool:
    """Whether a TCP connection from namespace ``src`` completes within 0.5 s."""
    out: list[object] = []

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


CHECKS = [  # (source, destination, port)
    ("web", "db", 5432),  # allowed by db-from-web
    ("adm", "db", 5432),  # same namespace as web, but not tier=front: denied
    ("job", "db", 5432),  # denied by no-batch
    ("web", "db", 22),  # port not allowed: denied across namespaces
    ("cache", "db", 22),  # same namespace: allowed
    ("job", "cache", 6379),  # no-batch covers the whole namespace db
    ("db", "web", 8080),  # across, nothing allows it: denied
    ("adm", "web", 8080),  # same namespace web: allowed
]


def test_compiled_table_enforces_policy(lab: None) -> None:
    listeners = [
        bind_in_netns(f"{PREFIX}-{dst}", socket.SOCK_STREAM, ("0.0.0.0", port))
        for dst, port in {(d, p) for _, d, p in CHECKS}
    ]
    try:
        assert all(_connects(src, _ip(dst), port) for src, dst, port in CHECKS)  # no table

        endpoints = [Endpoint(_ip(n), w) for n, (w, _) in CONTAINERS.items()]
        text = render(POLICIES, endpoints, endpoints, "10.218.0.0/16")
        subprocess.run(
            ["ip", "netns", "exec", DEV, "nft", "-f", "-"],
            input=text.encode(),
            check=True,
            capture_output=True,
        )
        for src, dst, port in CHECKS:
            want = decide(CONTAINERS[src][0], CONTAINERS[dst][0], "tcp", port, POLICIES)
            got = _connects(src, _ip(dst), port)
            assert got == want.allowed, f"{src} -> {dst}:{port}: {want.reason}"
        # applying again replaces the table in one transaction (no duplicate-table error)
        subprocess.run(
            ["ip", "netns", "exec", DEV, "nft", "-f", "-"],
            input=render([], endpoints, endpoints, "10.218.0.0/16").encode(),
            check=True,
            capture_output=True,
        )
        assert _connects("adm", _ip("web"), 8080) and not _connects("web", _ip("db"), 5432)
    finally:
        for s in listeners:
            s.close()
