"""Network-namespace labs: several "hosts" on one machine, joined by a private bridge.

A ``NetnsLab(prefix, subnet)`` owns, in the root namespace, one Linux bridge named
``<prefix>-br`` holding the subnet's first address (the *gateway*), and for every
``add_host(name)`` a namespace ``<prefix>-<name>`` whose ``eth0`` is one end of a veth pair; the
other end (``<prefix>-h<n>``) is a port of the bridge. Hosts reach each other and anything in the
root namespace that listens on the gateway address or on ``0.0.0.0``.

Contracts:

* **Nothing leaves the machine.** No NAT, no forwarding is turned on, and every host namespace
  rejects output on ``eth0`` to any address outside the lab's subnet (an iptables guard), so a
  host's default route via the gateway can only ever reach the root namespace. IPv6 is disabled
  inside hosts.
* **Names are the ownership record.** Everything a lab creates is named ``<prefix>-...``, and a
  prefix is letters and digits only (no dash), so ``cleanup_stale(prefix)`` removes exactly one
  lab's leftovers and never another's. Two labs that run at the same time need different
  prefixes *and* non-overlapping subnets; ``setup()`` refuses a subnet that overlaps an address
  or route already on the machine (``free_subnet()`` picks one that does not).
* **Teardown is idempotent and crash-safe.** ``teardown()`` kills every process in the lab's
  namespaces, deletes namespaces, veths and the bridge, and may be called any number of times,
  also after a failed ``setup()``. ``setup()`` first sweeps leftovers of a killed run with the
  same prefix.
* **Partitions are per host.** ``Host.cut()`` drops all traffic on the host's ``eth0`` (``lo``
  still works), ``Host.cut_peer(ip)`` only what goes between it and ``ip``, with iptables rules
  inside its own namespace; ``heal()`` removes them. Both are
  idempotent. Debian 12 defaults to the nf_tables backend (``iptables-nft``), which works per
  namespace; the legacy backend is used only if the default one fails. ``limit_rate()`` gives
  a host a slow uplink (tc token bucket).

``add_host_behind_nat(name, router)`` puts a host behind a NAT router: the router is an
ordinary lab host that masquerades (a full-cone NAT, iptables ``MASQUERADE``) for a private
link ``172.31.<n>.0/24`` to the host, whose default route is the router. Nothing there leaves
the lab either: the host's guard still rejects any destination outside the lab's subnet.

Do not send traffic to a lab's addresses after its teardown: without the bridge the machine
would route them like any other private address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within

__all__ = [
    "Host",
    "NetnsError",
    "NetnsLab",
    "cleanup_dead_runs",
    "cleanup_stale",
    "free_subnet",
    "netns_unavailable_reason",
    "run_prefix",
]

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,8}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
# Prefixes other software uses for its own interfaces/namespaces: a lab must never sweep those.
_RESERVED_PREFIXES = frozenset(
    {"br", "cni", "docker", "veth", "virbr", "eth", "en", "wl", "wlan", "lo", "tap", "tun"}
    | {"vxlan", "flannel", "cali", "kube", "lxc", "lxd", "podman", "ip", "ns", "netns"}
)
_MAX_HOSTS = 9999  # veth names are <prefix>-h<n>: 9 + 2 + 4 = 15 chars, the kernel's limit
_CMD_TIMEOUT = 15.0
_IPTABLES_BACKENDS = (
    ("iptables-restore", "iptables"),
    ("iptables-legacy-restore", "iptables-legacy"),
)
_iptables_backend: tuple[str, str] | None = None


class NetnsError(CloudlessError):
    code = "netns"


def netns_unavailable_reason() -> str | None:
    """Why labs cannot run here (not root, a tool missing), or None when they can."""
    if os.geteuid() != 0:
        return "network-namespace labs need root (ip netns, veth, bridge, iptables)"
    for tool in ("ip", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 iptables)"
    if not os.path.isdir("/proc/self/ns"):
        return "this kernel has no namespaces (/proc/self/ns missing)"
    return None


def _run(
    argv: Sequence[str], *, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=_CMD_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise NetnsError(f"`{argv[0]}` is not installed; install iproute2 and iptables") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(argv)}` did not finish in {_CMD_TIMEOUT:.0f}s") from None
    if check and p.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed (exit {p.returncode}): {p.stderr.strip()}")
    return p


def _ip_json(*args: str) -> list[dict[str, Any]]:
    p = _run(["ip", "-j", *args], check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    data = json.loads(p.stdout)
    return data if isinstance(data, list) else []


def _netns_names() -> list[str]:
    return [str(n["name"]) for n in _ip_json("netns", "list") if "name" in n]


def _netns_pids(ns: str) -> list[int]:
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _kill_netns_processes(ns: str, timeout: float = 3.0) -> None:
    """SIGKILL every process in ``ns`` and wait (bounded) until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _netns_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {ns} survived SIGKILL")
        time.sleep(0.02)


def _delete_netns(ns: str) -> None:
    _kill_netns_processes(ns)
    p = _run(["ip", "netns", "del", ns], check=False)
    if p.returncode != 0 and ns in _netns_names():
        raise NetnsError(f"could not delete namespace {ns}: {p.stderr.strip()}")


def _delete_link(name: str) -> None:
    p = _run(["ip", "link", "del", name], check=False)
    if p.returncode != 0 and any(link.get("ifname") == name for link in _ip_json("link", "show")):
        raise NetnsError(f"could not delete link {name}: {p.stderr.strip()}")


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.match(prefix):
        raise NetnsError(
            f'lab prefix "{prefix}" must be 1-9 lowercase letters/digits starting with a letter '
            "(no dash: the prefix is how a lab recognises its own namespaces and links)"
        )
    if prefix in _RESERVED_PREFIXES:
        raise NetnsError(
            f'lab prefix "{prefix}" is used by other software\'s interfaces; pick another '
            '(e.g. "cl" + a word)'
        )


def cleanup_stale(prefix: str) -> list[str]:
    """Delete every namespace and link named ``<prefix>-...`` (leftovers of a killed run).

    Returns what was removed. Processes still in those namespaces are killed first.
    """
    _check_prefix(prefix)
    removed: list[str] = []
    ns_re = re.compile(rf"^{prefix}-[a-z0-9][a-z0-9-]*$")
    link_re = re.compile(rf"^{prefix}-(br|h[0-9]+)$")
    for ns in _netns_names():
        if ns_re.match(ns):
            _delete_netns(ns)
            removed.append(f"netns {ns}")
    # Veths first (deleting a namespace usually took them along), then the bridge.
    links = [str(link.get("ifname", "")) for link in _ip_json("link", "show")]
    for name in sorted((n for n in links if link_re.match(n)), key=lambda n: n.endswith("-br")):
        _delete_link(name)
        removed.append(f"link {name}")
    return removed


def run_prefix(tag: str, pid: int | None = None) -> str:
    """A lab prefix unique to this process: ``tag`` (one lowercase letter), the pid, and
    ``tag`` again, e.g. ``s12345s``. Two runs of one test at once (two sessions on one
    machine) then never sweep each other's labs; ``cleanup_dead_runs(tag)`` removes the labs
    of runs that were killed."""
    if not re.fullmatch(r"[a-z]", tag):
        raise NetnsError(f"run_prefix: tag {tag!r} must be one lowercase letter")
    return f"{tag}{os.getpid() if pid is None else pid}{tag}"


def cleanup_dead_runs(tag: str) -> list[str]:
    """``cleanup_stale`` for every ``run_prefix(tag, pid)`` lab whose process is gone."""
    lab = re.compile(rf"^({tag}(\d+){tag})-")
    names = _netns_names() + [str(link.get("ifname", "")) for link in _ip_json("link", "show")]
    removed: list[str] = []
    for prefix, pid in {m.group(1): int(m.group(2)) for m in map(lab.match, names) if m}.items():
        if not os.path.exists(f"/proc/{pid}"):
            removed += cleanup_stale(prefix)
    return removed


def _used_networks(ignore_dev: str = "") -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for link in _ip_json("-4", "addr", "show"):
        if link.get("ifname") == ignore_dev:
            continue
        for a in link.get("addr_info", []):
            if "local" in a and "prefixlen" in a:
                nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for r in _ip_json("-4", "route", "show"):
        dst = str(r.get("dst", "default"))
        if dst != "default" and r.get("dev") != ignore_dev:
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def free_subnet(base: str = "10.213.0.0/16", prefixlen: int = 24, *, skip: int = 0) -> str:
    """The first ``/prefixlen`` inside ``base`` (after ``skip`` candidates) that overlaps no
    address or route on this machine. Raises NetnsError when all are taken."""
    used = _used_networks()
    for i, cand in enumerate(ipaddress.IPv4Network(base).subnets(new_prefix=prefixlen)):
        if i >= skip and not any(cand.overlaps(u) for u in used):
            return str(cand)
    raise NetnsError(f"no free /{prefixlen} left in {base}; tear down old labs (cleanup_stale)")


def _iptables() -> tuple[str, str]:
    if _iptables_backend is None:
        raise NetnsError("iptables was not set up yet; add a host first")
    return _iptables_backend


def _apply_rules(ns: str, rules: str, *, noflush: bool) -> None:
    """Load ``rules`` with iptables-restore inside ``ns``, choosing the backend on first use."""
    global _iptables_backend
    extra = ["--noflush"] if noflush else []
    candidates = [_iptables_backend] if _iptables_backend else list(_IPTABLES_BACKENDS)
    errors = []
    for restore, plain in candidates:
        if shutil.which(restore) is None:
            errors.append(f"{restore}: not installed")
            continue
        p = _run(["ip", "netns", "exec", ns, restore, "-w", *extra], check=False, input=rules)
        if p.returncode == 0:
            _iptables_backend = (restore, plain)
            return
        errors.append(f"{restore}: {p.stderr.strip()}")
    raise NetnsError(f"iptables rules could not be loaded in {ns}: {'; '.join(errors)}")


class Host:
    """One lab host: a network namespace with ``eth0`` at ``ip`` on the lab's bridge."""

    def __init__(self, name: str, netns: str, ip: str, veth: str, subnet: str) -> None:
        self.name = name
        self.netns = netns
        self.ip = ip
        self.veth = veth
        self.subnet = subnet
        self.is_cut = False

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, ip={self.ip!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace. ``ip netns exec`` execs in place, so the
        returned pid is the program's own (usable with freeze/thaw)."""
        return subprocess.Popen(self.argv(argv), **kw)

    def run(
        self, argv: Sequence[str], *, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace and wait (at most 15 s)."""
        return _run(self.argv(argv), check=check, input=input)

    async def exec(
        self, argv: Sequence[str], *, time_limit: float = 30.0, input: bytes | None = None
    ) -> tuple[int, str, str]:
        """Run ``argv`` inside the namespace without blocking the loop: ``(rc, stdout, stderr)``.

        Raises NetnsError (after killing the process) when it outlives ``time_limit`` seconds.
        """
        proc = await asyncio.create_subprocess_exec(
            *self.argv(argv),
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await within(time_limit, proc.communicate(input))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise NetnsError(f"`{' '.join(argv)}` on {self.name} took over {time_limit}s") from None
        rc = proc.returncode if proc.returncode is not None else -1
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def cut(self) -> None:
        """Drop every packet in and out of ``eth0`` (``lo`` keeps working). Idempotent."""
        _apply_rules(
            self.netns,
            "*filter\n-F CL-CUT-IN\n-F CL-CUT-OUT\n"
            "-A CL-CUT-IN -i eth0 -j DROP\n-A CL-CUT-OUT -o eth0 -j DROP\nCOMMIT\n",
            noflush=True,
        )
        self.is_cut = True

    def cut_peer(self, ip: str) -> None:
        """Drop every packet between ``eth0`` and ``ip`` only (one link of a partial
        partition: this host and ``ip`` still reach everything else). ``heal()`` undoes it,
        with any other cut of this host."""
        addr = ipaddress.ip_address(ip)
        if addr not in ipaddress.ip_network(self.subnet, strict=False):
            raise NetnsError(f"cut_peer: {ip} is not in the lab's subnet {self.subnet}")
        _apply_rules(
            self.netns,
            f"*filter\n-A CL-CUT-IN -i eth0 -s {addr} -j DROP\n"
            f"-A CL-CUT-OUT -o eth0 -d {addr} -j DROP\nCOMMIT\n",
            noflush=True,
        )

    def heal(self) -> None:
        """Undo ``cut()`` and every ``cut_peer()``. Idempotent."""
        _apply_rules(self.netns, "*filter\n-F CL-CUT-IN\n-F CL-CUT-OUT\nCOMMIT\n", noflush=True)
        self.is_cut = False

    def limit_rate(self, bits_per_second: int | None) -> None:
        """Cap the host's egress on ``eth0`` with a token bucket (a slow uplink, e.g. an IoT
        device); None removes the cap. (netem delay/loss is not in every kernel; tbf is.)"""
        if bits_per_second is None:
            self.run(["tc", "qdisc", "del", "dev", "eth0", "root"])  # absent: nothing to do
            return
        if bits_per_second < 8000:
            raise NetnsError(f"rate {bits_per_second} bit/s is below tc's 8000 bit/s minimum")
        burst = max(1600, bits_per_second // 8 // 100)  # ~10 ms of traffic, at least one MTU
        self.run(
            [
                *("tc", "qdisc", "replace", "dev", "eth0", "root", "tbf"),
                *("rate", f"{bits_per_second}bit", "burst", str(burst), "latency", "200ms"),
            ],
            check=True,
        )

    def iptables_rules(self) -> str:
        """The namespace's filter table as ``iptables -S`` prints it (for debugging/tests)."""
        return self.run([_iptables()[1], "-w", "-S"], check=True).stdout

    def pids(self) -> list[int]:
        """Every process currently in the namespace."""
        return _netns_pids(self.netns)

    def freeze(self, pids: Iterable[int] | None = None) -> None:
        """SIGSTOP ``pids`` (default: every process in the namespace)."""
        _signal_all(self.pids() if pids is None else pids, signal.SIGSTOP)

    def thaw(self, pids: Iterable[int] | None = None) -> None:
        """SIGCONT ``pids`` (default: every process in the namespace)."""
        _signal_all(self.pids() if pids is None else pids, signal.SIGCONT)

    def kill_all(self, timeout: float = 3.0) -> None:
        """SIGKILL every process in the namespace and wait until they are gone.

        Children the caller started with ``popen`` still need ``wait()`` to be reaped."""
        _kill_netns_processes(self.netns, timeout)


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _bridge_mac(prefix: str) -> str:
    """A stable, locally administered MAC, so the gateway's MAC does not change as ports join."""
    h = sum((i + 1) * ord(c) for i, c in enumerate(prefix))
    return f"02:c1:00:{h & 0xFF:02x}:{(h >> 8) & 0xFF:02x}:{(h >> 16) & 0xFF:02x}"


def _disable_ipv6_root(dev: str) -> None:
    with contextlib.suppress(OSError):
        with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as f:
            f.write("1")


class NetnsLab:
    """A bridge plus hosts in namespaces; see the module docstring for the contracts.

    Use as ``async with NetnsLab("cltest", subnet) as lab`` or ``with ...`` or call
    ``setup()``/``teardown()``. ``gateway`` is the bridge's address in the root namespace.
    """

    def __init__(self, prefix: str, subnet: str = "10.213.0.0/24") -> None:
        _check_prefix(prefix)
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as e:
            raise NetnsError(
                f'lab subnet "{subnet}" is not an IPv4 network like 10.213.0.0/24: {e}'
            ) from None
        if net.prefixlen > 29:
            raise NetnsError(f"lab subnet {subnet} is too small: use /29 or larger")
        if net.is_loopback or net.is_multicast or net.is_link_local:
            raise NetnsError(f"lab subnet {subnet} is loopback/multicast/link-local; use 10.x")
        self.prefix = prefix
        self.subnet = str(net)
        self._net = net
        self._addrs = list(net.hosts())
        self.gateway = str(self._addrs[0])
        self.bridge = f"{prefix}-br"
        self.hosts: dict[str, Host] = {}
        self._next = 1
        self._up = False
        self._lock = threading.Lock()  # add_host_async may run in several threads at once

    def __repr__(self) -> str:
        return f"NetnsLab({self.prefix!r}, {self.subnet!r}, hosts={list(self.hosts)})"

    def setup(self) -> None:
        """Sweep leftovers of this prefix, check the subnet is free, create the bridge."""
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsError(reason)
        cleanup_stale(self.prefix)
        self.hosts.clear()
        self._next = 1
        clash = [str(u) for u in _used_networks() if u.overlaps(self._net)]
        if clash:
            raise NetnsError(
                f"lab subnet {self.subnet} overlaps {', '.join(clash)} already on this machine; "
                "pick another subnet (cloudless.devenv.netns.free_subnet())"
            )
        try:
            _run(
                [
                    *("ip", "link", "add", "name", self.bridge),
                    *("address", _bridge_mac(self.prefix)),
                    *("type", "bridge", "stp_state", "0", "forward_delay", "0"),
                ]
            )
            self._up = True
            _disable_ipv6_root(self.bridge)
            _run(["ip", "addr", "add", f"{self.gateway}/{self._net.prefixlen}", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
        except BaseException:
            self.teardown()
            raise

    def add_host(self, name: str) -> Host:
        """Create namespace ``<prefix>-<name>`` with ``eth0`` at the next free address, ``lo``
        up, a default route via the gateway and the egress guard. Blocks ~50 ms."""
        with self._lock:
            return self._add_host(name)

    def _add_host(self, name: str) -> Host:
        if not self._up:
            raise NetnsError("the lab is not set up; call setup() or use it as a context manager")
        if not _NAME_RE.match(name):
            raise NetnsError(f'host name "{name}" must be lowercase letters, digits and dashes')
        if name in self.hosts:
            raise NetnsError(f'host "{name}" already exists in lab {self.prefix}')
        if self._next >= len(self._addrs) or self._next > _MAX_HOSTS:
            raise NetnsError(f"lab subnet {self.subnet} has no address left for {name}")
        ip = str(self._addrs[self._next])
        host = Host(name, f"{self.prefix}-{name}", ip, f"{self.prefix}-h{self._next}", self.subnet)
        self._next += 1
        ns, plen = host.netns, self._net.prefixlen
        try:
            _run(["ip", "netns", "add", ns])
            self.hosts[name] = host
            _run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            _run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]
            )
            _run(
                [
                    *("ip", "link", "add", host.veth, "type", "veth"),
                    *("peer", "name", "eth0", "netns", ns),
                ]
            )
            _disable_ipv6_root(host.veth)
            _run(["ip", "link", "set", host.veth, "master", self.bridge])
            _run(["ip", "link", "set", host.veth, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{plen}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "route", "add", "default", "via", self.gateway])
            _apply_rules(ns, self._base_rules(), noflush=False)
        except BaseException:
            self._remove_host(host)
            raise
        return host

    def _base_rules(self) -> str:
        return (
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":CL-CUT-IN - [0:0]\n:CL-CUT-OUT - [0:0]\n"
            "-A INPUT -j CL-CUT-IN\n-A OUTPUT -j CL-CUT-OUT\n"
            f"-A OUTPUT -o eth0 ! -d {self.subnet} -j REJECT --reject-with icmp-net-unreachable\n"
            "COMMIT\n"
        )

    def _remove_host(self, host: Host) -> None:
        self.hosts.pop(host.name, None)
        _delete_netns(host.netns)
        if host.veth:  # a host behind NAT has no link in the root namespace
            _delete_link(host.veth)

    def remove_host(self, name: str) -> None:
        """Kill the host's processes, delete its namespace and veth. Unknown names: no-op."""
        host = self.hosts.get(name)
        if host is not None:
            self._remove_host(host)

    def teardown(self) -> None:
        """Remove every host and the bridge; idempotent, also after a failed setup."""
        errors: list[str] = []
        for host in list(self.hosts.values()):
            try:
                self._remove_host(host)
            except NetnsError as e:
                errors.append(str(e))
        try:
            cleanup_stale(self.prefix)
        except NetnsError as e:
            errors.append(str(e))
        self._up = False
        if errors:
            raise NetnsError(f"lab {self.prefix} teardown left things behind: {'; '.join(errors)}")

    def __enter__(self) -> NetnsLab:
        self.setup()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    async def __aenter__(self) -> NetnsLab:
        await asyncio.to_thread(self.setup)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.teardown)

    async def add_host_async(self, name: str) -> Host:
        """``add_host`` in a worker thread, for use from the event loop."""
        return await asyncio.to_thread(self.add_host, name)

    def add_host_behind_nat(self, name: str, router: str) -> Host:
        """A new router host (see ``add_host``) and host ``name`` behind it (module
        docstring). The host's ``ip`` is its private address."""
        with self._lock:
            r = self._add_host(router)
            n = len(self.hosts)
            if n > 250:
                raise NetnsError("no private link subnet left for another NAT host")
            ip, gw = f"172.31.{n}.2", f"172.31.{n}.1"
            host = Host(name, f"{self.prefix}-{name}", ip, "", self.subnet)
            ns = host.netns
            try:
                _run(["ip", "netns", "add", ns])
                self.hosts[name] = host
                for q in ("all", "default"):
                    cmd = ["sysctl", "-qw", f"net.ipv6.conf.{q}.disable_ipv6=1"]
                    _run(["ip", "netns", "exec", ns, *cmd])
                _run(
                    [
                        *("ip", "-n", r.netns, "link", "add", "lan0", "type", "veth"),
                        *("peer", "name", "eth0", "netns", ns),
                    ]
                )
                _run(["ip", "-n", r.netns, "addr", "add", f"{gw}/24", "dev", "lan0"])
                _run(["ip", "-n", r.netns, "link", "set", "lan0", "up"])
                _run(["ip", "netns", "exec", r.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
                _apply_rules(
                    r.netns,
                    "*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n"
                    "*filter\n-A FORWARD -i lan0 -j ACCEPT\n-A FORWARD -o lan0 -j ACCEPT\nCOMMIT\n",
                    noflush=True,
                )
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
                _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
                _run(["ip", "-n", ns, "route", "add", "default", "via", gw])
                _apply_rules(ns, self._base_rules(), noflush=False)
            except BaseException:
                self._remove_host(host)
                raise
            return host

    async def add_host_behind_nat_async(self, name: str, router: str) -> Host:
        return await asyncio.to_thread(self.add_host_behind_nat, name, router)


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudless.devenv.netns cleanup PREFIX`` removes a killed lab's leftovers."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "cleanup":
        try:
            removed = cleanup_stale(args[1])
        except NetnsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print("\n".join(removed) if removed else f"nothing left by lab {args[1]}")
        return 0
    print("usage: python -m cloudless.devenv.netns cleanup PREFIX", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
