"""A real cut-off on loopback: drop every packet between one agent process and the coordinator.

A cut link sends no FIN: the coordinator only learns of it when its own segments stay
unacknowledged (HTTP/2 PING + TCP_USER_TIMEOUT, see ``cloudless/lib/keepalive.py``). To
produce exactly that, :class:`Cut` finds the process's established TCP connections to the
coordinator's agent port (``/proc/<pid>/fd`` socket inodes matched against
``/proc/<pid>/net/tcp`` and ``tcp6``) and drops both directions of each 4-tuple in
``INPUT`` on ``lo``.
The agent will try to reconnect on a new port, as a real agent behind a cut cable would;
those attempts must fail too, so the process is also moved into its own cgroup (v2) and its
new packets to the agent port are dropped in ``OUTPUT`` (``-m cgroup --path``; sockets made
before the move keep their old cgroup, which is why the 4-tuples are needed as well).

Every rule carries the comment ``clbench-<harness pid>``; :func:`sweep` removes exactly those
(and nothing else) and runs on leaving a ``Cut``, at exit and on SIGTERM/SIGINT. If the
harness is killed with SIGKILL, ``iptables -S | grep clbench-`` shows what is left.
"""

from __future__ import annotations

import atexit
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TAG = f"clbench-{os.getpid()}"
TCP_ESTABLISHED = "01"


@dataclass(frozen=True)
class TcpConn:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str  # hex code, "01" = ESTABLISHED
    inode: int


V4_MAPPED = "0000000000000000FFFF0000"  # ::ffff:a.b.c.d as /proc/net/tcp6 prints it


def _addr(hexaddr: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080): IPv4 in host (little-endian) byte order.

    From ``/proc/net/tcp6`` only IPv4-mapped addresses (``::ffff:127.0.0.1``, what gRPC's
    dual-stack sockets use for IPv4 peers) are accepted; their packets are IPv4, so
    ``iptables`` sees them. Other IPv6 addresses raise ``ValueError``.
    """
    ip_hex, port_hex = hexaddr.split(":")
    if len(ip_hex) == 32 and ip_hex.upper().startswith(V4_MAPPED):
        ip_hex = ip_hex[24:]
    if len(ip_hex) != 8:
        raise ValueError(f"not an IPv4 address: {hexaddr}")
    octets = [str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0)]
    return ".".join(octets), int(port_hex, 16)


def parse_proc_net_tcp(text: str) -> list[TcpConn]:
    """The rows of ``/proc/<pid>/net/tcp`` (header skipped; malformed rows ignored)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            out.append(TcpConn(_addr(f[1]), _addr(f[2]), f[3], int(f[9])))
        except ValueError:
            continue
    return out


def socket_inode(link: str) -> int | None:
    """``socket:[12345]`` (the target of a ``/proc/<pid>/fd`` link) -> 12345."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return None


def connections_to(conns: list[TcpConn], inodes: set[int], port: int) -> list[TcpConn]:
    """Established connections owned by the process (``inodes``) whose remote port is ``port``."""
    return [
        c for c in conns if c.inode in inodes and c.remote[1] == port and c.state == TCP_ESTABLISHED
    ]


def rules_for(conn: TcpConn, tag: str = TAG) -> list[list[str]]:
    """Two ``INPUT`` rules (chain first, no ``-I``/``-D``) dropping both directions of
    ``conn`` on loopback; packets between two local sockets traverse ``INPUT`` on ``lo``."""
    (lip, lport), (rip, rport) = conn.local, conn.remote
    base = ["INPUT", "-i", "lo", "-p", "tcp"]
    tail = ["-m", "comment", "--comment", tag, "-j", "DROP"]
    return [
        [*base, "-s", rip, "--sport", str(rport), "-d", lip, "--dport", str(lport), *tail],
        [*base, "-s", lip, "--sport", str(lport), "-d", rip, "--dport", str(rport), *tail],
    ]


def cgroup_rule(cgroup: str, port: int, tag: str = TAG) -> list[str]:
    """An ``OUTPUT`` rule dropping new packets of a cgroup's sockets to ``port`` on loopback."""
    return [
        "OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(port), "-m", "cgroup",
        "--path", cgroup, "-m", "comment", "--comment", tag, "-j", "DROP",
    ]  # fmt: skip


def tagged_rules(listing: str, tag: str = TAG) -> list[list[str]]:
    """From ``iptables -S`` output, the ``-A`` rules carrying exactly ``tag``, as arguments
    for ``-D`` (chain first)."""
    out = []
    for line in listing.splitlines():
        if not line.startswith("-A "):
            continue
        args = shlex.split(line)[1:]
        for i, a in enumerate(args[:-1]):
            if a == "--comment" and args[i + 1] == tag:
                out.append(args)
                break
    return out


def _ipt(*args: str) -> None:
    subprocess.run(["iptables", "-w", "5", *args], check=True, capture_output=True, text=True)


def sweep(tag: str = TAG) -> int:
    """Delete every rule tagged ``tag`` in INPUT and OUTPUT; returns how many."""
    n = 0
    for chain in ("INPUT", "OUTPUT"):
        try:
            listing = subprocess.run(
                ["iptables", "-w", "5", "-S", chain], check=True, capture_output=True, text=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        for rule in tagged_rules(listing, tag):
            try:
                _ipt("-D", *rule)
                n += 1
            except subprocess.CalledProcessError:
                pass
    return n


atexit.register(sweep)


def _cgroup2_root() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] == "cgroup2":
            return Path(f[1])
    return None


def own_cgroup(text: str) -> str:
    """The cgroup v2 path of a process, relative to the root, from ``/proc/<pid>/cgroup``
    (the ``0::/path`` line): ``0::/a/b`` -> ``a/b``; ``0::/`` -> ``""``."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip().lstrip("/")
    return ""


def process_connections(pid: int, port: int) -> list[TcpConn]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            ino = socket_inode(os.readlink(fd))
        except OSError:
            continue
        if ino is not None:
            inodes.add(ino)
    conns = [
        c
        for name in ("tcp", "tcp6")
        for c in parse_proc_net_tcp(Path(f"/proc/{pid}/net/{name}").read_text())
    ]
    return connections_to(conns, inodes, port)


def server_side_open(conn: TcpConn) -> bool:
    """Whether the coordinator's end of ``conn`` is still established (it leaves that state
    when the kernel gives up on unacknowledged data, TCP_USER_TIMEOUT, or when gRPC closes
    it); asks the kernel with a filtered ``ss`` (netlink: cheap with thousands of sockets)."""
    flt = f"( sport = :{conn.remote[1]} and dport = :{conn.local[1]} )"
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", flt], capture_output=True, text=True, check=False
    ).stdout
    return bool(out.strip())


def watch_server_side(conns: list[TcpConn], timeout: float, poll: float = 0.05) -> float | None:
    """Wall time at which the coordinator's end of every connection in ``conns`` was gone
    (closed by TCP_USER_TIMEOUT or gRPC's PING timeout), or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(server_side_open(c) for c in conns):
            return time.time()
        time.sleep(poll)
    return None


class Cut:
    """``with Cut(pid, agent_port) as c:`` the process ``pid`` is cut off from the
    coordinator's agent port until the block ends (rules removed in any case).

    ``c.conns`` are the connections cut; ``c.t_cut`` the wall time just before the rules
    were committed (one ``iptables-restore`` transaction, so both directions drop at once);
    ``c.new_connections_blocked`` whether the cgroup rule could be installed.
    """

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.conns: list[TcpConn] = []
        self.t_cut = 0.0
        self.new_connections_blocked = False
        self._cg: Path | None = None
        self._home: Path | None = None  # the cgroup the process was in

    def __enter__(self) -> Cut:
        self.conns = process_connections(self.pid, self.port)
        if not self.conns:
            raise RuntimeError(f"process {self.pid} has no connection to port {self.port}")
        rules = [r for c in self.conns for r in rules_for(c)]
        root = _cgroup2_root()
        try:
            if root is not None:
                self._home = root / own_cgroup(Path(f"/proc/{self.pid}/cgroup").read_text())
                cg = root / f"{TAG}-{self.pid}"
                cg.mkdir(exist_ok=True)
                (cg / "cgroup.procs").write_text(str(self.pid))
                self._cg = cg
                rules.append(cgroup_rule(cg.name, self.port))
                self.new_connections_blocked = True
        except OSError:
            self.new_connections_blocked = False
        script = "*filter\n" + "".join(f"-I {shlex.join(r)}\n" for r in rules) + "COMMIT\n"
        self.t_cut = time.time()
        try:
            subprocess.run(
                ["iptables-restore", "-w", "5", "--noflush"],
                input=script, check=True, capture_output=True, text=True,
            )  # fmt: skip
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        sweep()
        if self._cg is not None and self._home is not None:
            try:
                (self._home / "cgroup.procs").write_text(str(self.pid))
            except OSError:
                pass  # the process is gone
            for _ in range(20):
                try:
                    self._cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)
            self._cg = None
