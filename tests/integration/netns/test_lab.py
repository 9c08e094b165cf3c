"""NetnsLab against the real kernel: addressing, reachability, partitions, teardown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloudless.devenv.netns import (
    Host,
    NetnsError,
    NetnsLab,
    cleanup_dead_runs,
    cleanup_stale,
    free_subnet,
    run_prefix,
)
from tests.integration.netns.conftest import RUN, require_netns

pytestmark = pytest.mark.netns

PROBE = str(Path(__file__).with_name("_probe.py"))


def ping(host: Host, ip: str) -> bool:
    return host.run(["busybox", "ping", "-c1", "-W1", ip]).returncode == 0


@contextmanager
def server(host: Host, greeting: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A TCP greeter inside ``host``; yields (process, port)."""
    p = host.popen([sys.executable, PROBE, "serve", greeting], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        yield p, int(p.stdout.readline())
    finally:
        p.kill()
        p.wait()


def fetch_from(host: Host, ip: str, port: int, timeout: float = 2.0) -> str:
    return host.run([sys.executable, PROBE, "fetch", ip, str(port), str(timeout)]).stdout.strip()


def fetch_root(ip: str, port: int, timeout: float = 2.0) -> str:
    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            return c.recv(100).decode()
    except OSError as e:
        return f"error: {e}"


def leftovers(prefix: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return [n for n in ns + names if n.startswith(prefix + "-")]


def test_addresses_follow_the_subnet(lab: NetnsLab) -> None:
    # /24 at x.y.z.0: gateway .1, hosts .2, .3 in the order they were added.
    a, b = lab.add_host("a"), lab.add_host("b")
    base = lab.subnet.rsplit(".", 1)[0]
    assert (lab.gateway, a.ip, b.ip) == (f"{base}.1", f"{base}.2", f"{base}.3")
    assert (a.netns, b.netns) == (f"{lab.prefix}-a", f"{lab.prefix}-b")
    route = a.run(["ip", "route", "show", "default"]).stdout
    assert f"via {lab.gateway} dev eth0" in route
    links = a.run(["ip", "-o", "link", "show"]).stdout
    assert "lo:" in links and "eth0@" in links and links.count(": <") == 2


def test_hosts_ping_each_other_and_the_gateway(lab: NetnsLab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    assert ping(a, b.ip)
    assert ping(b, a.ip)
    assert ping(a, lab.gateway)
    assert ping(a, "127.0.0.1")  # lo is up


def test_tcp_between_hosts_and_with_the_root_namespace(lab: NetnsLab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    with server(a, "hello from a") as (_, port):
        assert fetch_from(b, a.ip, port) == "hello from a"
        assert fetch_root(a.ip, port) == "hello from a"


async def test_root_namespace_service_on_the_gateway_is_reachable(lab: NetnsLab) -> None:
    b = await lab.add_host_async("b")

    async def greet(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello from root")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(greet, lab.gateway, 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        rc, out, err = await b.exec([sys.executable, PROBE, "fetch", lab.gateway, str(port), "2"])
    assert (rc, out.strip()) == (0, "hello from root"), err


def test_cut_blocks_and_heal_restores(lab: NetnsLab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    with server(a, "hi") as (_, port):
        assert fetch_from(b, a.ip, port) == "hi"
        a.cut()
        a.cut()  # idempotent
        assert a.is_cut
        assert fetch_from(b, a.ip, port, timeout=0.5).startswith("error")
        assert fetch_root(a.ip, port, timeout=0.5).startswith("error")
        assert not ping(a, b.ip)
        assert fetch_from(a, "127.0.0.1", port) == "hi"  # lo is not cut
        assert fetch_from(b, lab.gateway, 9, timeout=0.5).startswith("error")  # b unaffected...
        assert ping(b, lab.gateway)  # ...and still on the network
        a.heal()
        a.heal()
        assert fetch_from(b, a.ip, port) == "hi"
        assert fetch_root(a.ip, port) == "hi"


def test_cut_peer_drops_one_link_only(lab: NetnsLab) -> None:
    a, b, c = lab.add_host("a"), lab.add_host("b"), lab.add_host("c")
    a.cut_peer(b.ip)
    assert not ping(a, b.ip) and not ping(b, a.ip)  # both directions of the a-b link
    assert ping(a, c.ip) and ping(b, c.ip) and ping(a, lab.gateway)  # every other link
    assert not a.is_cut
    a.heal()
    assert ping(a, b.ip) and ping(b, a.ip)
    with pytest.raises(NetnsError, match="not in the lab's subnet"):
        a.cut_peer("192.0.2.1")


def test_run_prefixes_sweep_only_dead_runs() -> None:
    require_netns()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert run_prefix("w", 123) == "w123w" and run_prefix("w") == f"w{os.getpid()}w"
    with pytest.raises(NetnsError, match="one lowercase letter"):
        run_prefix("ww")
    mine = NetnsLab(run_prefix("w"), free_subnet(skip=110))
    gone = NetnsLab(run_prefix("w", dead.pid), free_subnet(skip=111))
    try:
        mine.setup()
        gone.setup()
        gone.add_host("a")
        removed = cleanup_dead_runs("w")
        assert f"netns {gone.prefix}-a" in removed and leftovers(gone.prefix) == []
        assert not any(mine.prefix in r for r in removed) and leftovers(mine.prefix) != []
    finally:
        mine.teardown()
        gone.teardown()


def test_egress_outside_the_subnet_is_rejected_inside_the_host(lab: NetnsLab) -> None:
    a = lab.add_host("a")
    rules = a.iptables_rules()
    assert f"-A OUTPUT ! -d {lab.subnet} -o eth0 -j REJECT" in rules
    assert "MASQUERADE" not in rules
    fwd = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    assert fwd == "0" or "REJECT" in rules


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def eventually(cond: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll a kernel-side state change (signal delivery, exec) for a bounded time."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_freeze_thaw_and_kill_all(lab: NetnsLab) -> None:
    a = lab.add_host("a")
    sleepers = [a.popen(["sleep", "60"]) for _ in range(2)]
    pids = [p.pid for p in sleepers]
    # `ip netns exec` execs in place: the namespace's pids are the Popen pids, running sleep.
    assert eventually(lambda: all(comm(p) == "sleep" for p in pids))
    assert sorted(a.pids()) == sorted(pids)

    a.freeze(pids[:1])
    assert eventually(lambda: (state(pids[0]), state(pids[1])) == ("T", "S"))
    a.thaw(pids[:1])
    assert eventually(lambda: state(pids[0]) == "S")
    a.freeze()  # everything in the namespace
    assert eventually(lambda: {state(p) for p in pids} == {"T"})
    a.kill_all()
    assert a.pids() == []
    assert [p.wait(timeout=2) for p in sleepers] == [-signal.SIGKILL, -signal.SIGKILL]


def test_teardown_leaves_nothing_and_is_idempotent() -> None:
    require_netns()
    prefix = RUN + "t"
    lab = NetnsLab(prefix, free_subnet(skip=100))
    with lab:
        a = lab.add_host("a")
        lab.add_host("b")
        child = a.popen(["sleep", "60"])
        assert len(leftovers(prefix)) == 5  # 2 namespaces, 2 veths, 1 bridge
    assert leftovers(prefix) == []
    assert child.wait(timeout=2) == -signal.SIGKILL
    lab.teardown()  # again: nothing to do, no error
    assert leftovers(prefix) == []


def test_cleanup_stale_after_a_crash() -> None:
    require_netns()
    prefix = RUN + "c"
    crashed = NetnsLab(prefix, free_subnet(skip=100))
    crashed.setup()
    a = crashed.add_host("a")
    orphan = a.popen(["sleep", "60"])
    del crashed  # the run "died" without teardown
    assert len(leftovers(prefix)) == 3
    # A new lab with the same prefix sweeps the leftovers before it starts.
    with NetnsLab(prefix, free_subnet(skip=100)) as fresh:
        assert leftovers(prefix) == [f"{prefix}-br"]
        assert orphan.wait(timeout=2) == -signal.SIGKILL
        fresh.add_host("a")
    assert cleanup_stale(prefix) == []


def test_two_labs_coexist_and_are_isolated() -> None:
    require_netns()
    s1 = free_subnet(skip=100)
    with NetnsLab(RUN + "x", s1) as one:
        s2 = free_subnet(skip=100)
        assert s2 != s1
        with pytest.raises(NetnsError, match="overlaps"):
            NetnsLab(RUN + "z", s1).setup()
        assert leftovers(RUN + "z") == []
        with NetnsLab(RUN + "y", s2) as two:
            a1, b1 = one.add_host("a"), one.add_host("b")
            a2 = two.add_host("a")
            assert ping(a1, b1.ip) and ping(a2, two.gateway)
            assert not ping(a1, a2.ip)  # other lab's subnet: rejected by the egress guard
        assert ping(a1, b1.ip)  # the first lab survives the second's teardown
        assert leftovers(RUN + "y") == []


@pytest.mark.parametrize(
    ("prefix", "subnet", "match"),
    [
        ("Bad", "10.213.0.0/24", "prefix"),
        ("with-dash", "10.213.0.0/24", "no dash"),
        ("waytoolong", "10.213.0.0/24", "prefix"),
        ("ok", "10.213.0.1/24", "not an IPv4 network"),
        ("ok", "10.213.0.0/30", "too small"),
        ("ok", "127.0.0.0/24", "loopback"),
        ("br", "10.213.0.0/24", "other software"),  # would sweep docker's br-* bridges
        ("cni", "10.213.0.0/24", "other software"),
    ],
)
def test_bad_lab_parameters_are_refused_with_the_reason(
    prefix: str, subnet: str, match: str
) -> None:
    with pytest.raises(NetnsError, match=match):
        NetnsLab(prefix, subnet)


def test_bad_host_names_and_exhaustion(lab: NetnsLab) -> None:
    with pytest.raises(NetnsError, match="lowercase"):
        lab.add_host("Bad_Name")
    lab.add_host("a")
    with pytest.raises(NetnsError, match="already exists"):
        lab.add_host("a")


def test_small_subnet_runs_out_of_addresses() -> None:
    require_netns()
    subnet = free_subnet(skip=100, prefixlen=29)  # 6 usable: gateway + 5 hosts
    with NetnsLab(RUN + "s", subnet) as lab:
        for i in range(5):
            lab.add_host(f"h{i}")
        with pytest.raises(NetnsError, match="no address left"):
            lab.add_host("h5")
    assert os.path.exists("/proc/self/ns/net")


def test_setup_and_host_creation_are_fast(lab: NetnsLab) -> None:
    t = time.monotonic()
    for i in range(4):
        lab.add_host(f"h{i}")
    assert time.monotonic() - t < 10  # generous: a sanity bound, not a benchmark


def test_cleanup_stale_touches_only_its_own_names() -> None:
    require_netns()
    prefix = RUN + "o"
    foreign_ns = f"{prefix}x-keep"  # another lab whose prefix merely starts the same
    foreign_link = f"{prefix}-keep"  # our prefix, but not a name a lab ever creates
    try:
        subprocess.run(["ip", "netns", "add", foreign_ns], check=True)
        subprocess.run(["ip", "link", "add", foreign_link, "type", "bridge"], check=True)
        with NetnsLab(prefix, free_subnet(skip=100)) as lab:
            lab.add_host("a")
        assert cleanup_stale(prefix) == []
        assert (
            foreign_ns
            in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        assert subprocess.run(["ip", "link", "show", foreign_link]).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", foreign_ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", foreign_link], stderr=subprocess.DEVNULL)


def test_labs_of_killed_test_runs_are_swept() -> None:
    require_netns()
    from tests.integration.netns.conftest import _sweep_labs_of_dead_runs

    dead = "t9999999z"  # pid 9999999 is above any pid_max: that run is certainly gone
    lab = NetnsLab(dead, free_subnet(skip=100))
    lab.setup()
    lab.add_host("a")
    assert len(leftovers(dead)) == 3
    _sweep_labs_of_dead_runs()
    assert leftovers(dead) == []


async def test_hosts_added_concurrently_get_distinct_addresses() -> None:
    require_netns()
    async with NetnsLab(RUN + "p", free_subnet(skip=100)) as lab:
        hosts = await asyncio.gather(*(lab.add_host_async(f"h{i}") for i in range(4)))
        # gateway .1, hosts .2-.5 in some order
        assert sorted(int(h.ip.rsplit(".", 1)[1]) for h in hosts) == [2, 3, 4, 5]
        rcs = await asyncio.gather(
            *(h.exec(["busybox", "ping", "-c1", "-W1", lab.gateway]) for h in hosts)
        )
        assert [rc for rc, _, _ in rcs] == [0, 0, 0, 0]
    assert leftovers(RUN + "p") == []


def test_a_lab_can_be_set_up_again_after_teardown() -> None:
    require_netns()
    lab = NetnsLab(RUN + "r", free_subnet(skip=100))
    for _ in range(2):
        with lab:
            a = lab.add_host("a")
            base = lab.subnet.rsplit(".", 1)[0]
            assert a.ip == f"{base}.2" and ping(a, lab.gateway)
    assert leftovers(RUN + "r") == []


def test_cli_cleanup() -> None:
    require_netns()
    from cloudless.devenv.netns import main

    prefix = RUN + "k"
    NetnsLab(prefix, free_subnet(skip=100)).setup()
    assert main(["cleanup", prefix]) == 0
    assert leftovers(prefix) == []
    assert main(["cleanup", "Bad"]) == 1
    assert main([]) == 2


def test_limit_rate_installs_and_removes_a_token_bucket(lab: NetnsLab) -> None:
    a, b = lab.add_host("a"), lab.add_host("b")
    a.limit_rate(1_000_000)  # 1 Mbit/s
    assert "tbf" in a.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    assert ping(b, a.ip)  # slowed, not cut
    a.limit_rate(None)
    a.limit_rate(None)  # idempotent
    assert "tbf" not in a.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
    with pytest.raises(NetnsError, match="minimum"):
        a.limit_rate(100)
