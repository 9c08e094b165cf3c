"""A whole Cloudless cluster on one machine: every coordinator and agent in a network namespace
of its own, every agent with its own containerd, all of them real processes.

    async with NetnsCluster(tmp, coordinators=3, agents=3) as c:
        c.client.apply(spec)
        c.kill_agent(0)                  # kill -9 the agent process (containers keep running)
        await c.start_agent(0)           # it comes back with the identity on its disk

Layout (``prefix`` defaults to ``clchaos``):

* a ``NetnsLab`` bridge; the private OCI registry listens on the bridge's gateway address and
  holds ``busybox:1`` (``c.image``);
* coordinators ``c1..cN`` each in namespace ``<prefix>-cN`` at its own address with the default
  ports (the first bootstraps with embedded etcd, the others join with coordinator-join
  tokens). A namespace per coordinator rather than distinct ports on the gateway: each
  coordinator has an address of its own as on real machines (agents and etcd peers learn
  and redirect to those addresses), "kill every process of that host" models a machine
  crash (coordinator and etcd member at once), a coordinator can be cut off the network like
  any agent, and the default ports need no allocation;
* agents ``a1..aN`` in namespaces ``<prefix>-aN``, node names ``node-N``, zones round-robin
  from ``zones``, each with a ``PrivateContainerd`` in its namespace and its data dir on a
  tmpfs of ``disk_mib`` MiB (so ``fill_disk`` can fill it without touching the machine's disk);
* with ``storage`` (a size), every agent also runs an object-store node (``agent --storage``)
  in its zone, peer RPC on ``STORE_RPC_PORT`` and S3 on ``STORE_S3_PORT`` of its address; an
  agent behind NAT gets those two ports forwarded by its router and advertises the router's
  address (as a home user would), so ``s3_endpoint(i)`` is reachable from the root namespace
  and from every other host.

Contracts: every method that injects a fault is synchronous and returns at once; waiting is the
caller's business. ``close()`` (also on context exit, also after a failed start) kills every
process, stops the containerd daemons with their shims and containers, unmounts the tmpfs
mounts, removes the namespaces and the cgroups under ``/cloudless/<namespace>``, and
``leftovers()`` reports anything that survived (empty after a clean teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cloudless.agent.volume_quota import unmount_images
from cloudless.cli.client import Client, ClientConfig
from cloudless.devenv import _proc
from cloudless.devenv.containerd import PrivateContainerd, containerd_available, remove_cgroups
from cloudless.devenv.images import build_busybox_image
from cloudless.devenv.netns import (
    Host,
    NetnsLab,
    _apply_rules,
    free_subnet,
    netns_unavailable_reason,
)
from cloudless.devenv.registry import PrivateRegistry
from cloudless.lib.errors import CloudlessError
from cloudless.lib.waits import within
from cloudless.network.addressing import parse_network_flag

__all__ = ["ClusterError", "NetnsCluster", "Proc", "unavailable_reason", "wait_until"]

API_PORT, AGENT_PORT, ENROLL_PORT, ETCD_CLIENT, ETCD_PEER = 8443, 7443, 7444, 2379, 2380
STORE_S3_PORT, STORE_RPC_PORT = 3900, 3901
LIGHTHOUSE_PORT = 4242


class ClusterError(CloudlessError):
    code = "cluster"


def unavailable_reason() -> str | None:
    """Why a ``NetnsCluster`` cannot run on this machine, or ``None`` if it can (for test
    skips): root, network namespaces, containerd and runc, etcd, docker-registry, ctr."""
    if os.geteuid() != 0:
        return "run as root"
    return (
        netns_unavailable_reason()
        or ("containerd/runc missing" if not containerd_available() else None)
        or ("etcd missing" if shutil.which("etcd") is None else None)
        or ("docker-registry missing" if shutil.which("docker-registry") is None else None)
        or ("ctr missing" if shutil.which("ctr") is None else None)
    )


async def wait_until(
    what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.1
) -> Any:
    """Poll ``probe`` (in a thread) until it returns something truthy; CloudlessError and
    OSError count as "not yet". Raises ClusterError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            v = await asyncio.to_thread(probe)
            if v:
                return v
        except (CloudlessError, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            raise ClusterError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" ({last})" if last else "")
            )
        await asyncio.sleep(interval)


@dataclass
class Proc:
    """A process we started: its name, argv, log file and handle."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, sig)

    def reap(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


class NetnsCluster:
    def __init__(
        self,
        work_dir: Path | str,
        *,
        coordinators: int = 1,
        agents: int = 3,
        zones: Sequence[str] = ("zone-a", "zone-b", "zone-c"),
        prefix: str = "clchaos",
        namespace: str = "",
        disk_mib: int = 64,
        subnet: str | None = None,
        node_name: str = "node",
        region: str = "lab",
        root_key_size: int = 2048,
        bcrypt_cost: int = 4,
        progress: Callable[[str], None] | None = None,
        network: str = "",
        nat_agents: int = 0,
        storage: str = "",
        storage_grace: float | None = None,
    ) -> None:
        """``root_key_size``/``bcrypt_cost``: test-speed defaults (the demo uses the product's
        4096/10); ``progress`` hears one line per bring-up step. ``network``: the first
        coordinator's ``--network`` ("on" or key=value,...; "" off), with its lighthouse added
        on its own address; agents' container namespaces then carry the lab prefix and
        their hosts forward container traffic. ``nat_agents``: the last that many agents'
        hosts sit behind NAT routers of their own (``NetnsLab.add_host_behind_nat``)."""
        if coordinators < 1 or agents < 0 or not zones:
            raise ClusterError("need at least one coordinator and one zone")
        self.node_name, self.region = node_name, region
        self.root_key_size, self.bcrypt_cost = root_key_size, bcrypt_cost
        self.progress = progress or (lambda line: None)
        self.work = Path(work_dir).resolve()
        self.n_coord, self.n_agents, self.zones = coordinators, agents, tuple(zones)
        self.namespace = namespace or prefix  # containerd namespace and cgroup parent
        self.disk_mib = disk_mib
        self.lab = NetnsLab(prefix, subnet or free_subnet(skip=7))
        self.registry: PrivateRegistry | None = None
        self.image = ""
        self.coord_hosts: dict[str, Host] = {}
        self.coords: dict[str, Proc] = {}
        self.agent_hosts: list[Host] = []
        self.agents: list[Proc | None] = []
        self.containerds: list[PrivateContainerd] = []
        self.node_ids: list[str] = []
        self.procs: list[Proc] = []
        self.mounts: list[Path] = []
        self.client: Client | None = None  # type: ignore[assignment]
        self.logs = self.work / "logs"
        self._spawned = 0
        self.network = network
        self.nat_agents = nat_agents
        self.network_plan = parse_network_flag(network) if network else None
        self.storage, self.storage_grace = storage, storage_grace

    # -- bring-up ---------------------------------------------------------------------------

    async def __aenter__(self) -> NetnsCluster:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.lab.setup)
        gw = self.lab.gateway
        self.registry = PrivateRegistry(bind=gw, root_dir=self.work / "registry")
        await self.registry.start()
        self.image = await build_busybox_image(self.registry, "busybox", "1")
        self.progress(f"registry on {gw}, holding {self.image}")
        for i in range(self.n_coord):
            self.coord_hosts[f"c{i + 1}"] = await self.lab.add_host_async(f"c{i + 1}")
        for i in range(self.n_agents):
            if i >= self.n_agents - self.nat_agents:
                h = await self.lab.add_host_behind_nat_async(f"a{i + 1}", f"r{i + 1}")
            else:
                h = await self.lab.add_host_async(f"a{i + 1}")
            self.agent_hosts.append(h)
        hosts = [*self.coord_hosts.values(), *self.agent_hosts]
        self.progress(
            "hosts (network namespaces): "
            + ", ".join(
                f"{h.name} {h.ip}" + ("" if h.veth else " behind a NAT router") for h in hosts
            )
        )
        await self._start_coordinators()
        self.progress(
            f"{self.n_coord} coordinator(s) with embedded etcd, RSA-{self.root_key_size} CA; "
            f"API {self.api_url(next(iter(self.coord_hosts)))}"
        )
        for i in range(self.n_agents):
            await self._start_agent_first(i)
        names = {f"{self.node_name}-{i + 1}": i for i in range(self.n_agents)}
        ready = await wait_until(
            f"{self.n_agents} ready nodes",
            lambda: (
                (ns := self.api.nodes())
                and sum(n["state"] == "ready" for n in ns) == self.n_agents
                and ns
            ),
            90,
        )
        self.node_ids = [""] * self.n_agents
        for n in ready:
            self.node_ids[names[n["name"]]] = n["id"]
        self.progress(
            f"{self.n_agents} agents enrolled with one-time tokens, each with its containerd"
        )

    @property
    def api(self) -> Client:
        if self.client is None:
            raise ClusterError("the cluster is not started")
        return self.client

    def reload_client(self) -> Client:
        """Build ``api`` again from the admin config's files: after ``cloudless ca rotate``
        rewrote its certificate, key and bundle, the old client's TLS context trusts a root
        that is gone and presents a certificate that is refused."""
        cfg = ClientConfig.load(self.admin_config)
        cfg.servers = [self.api_url(n) for n in self.coord_hosts]
        self.client = Client(cfg, timeout=10)
        return self.client

    def api_url(self, name: str) -> str:
        return f"https://{self.coord_hosts[name].ip}:{API_PORT}"

    @property
    def admin_config(self) -> Path:
        """The admin client config the first coordinator wrote (``CLOUDLESS_CONFIG``)."""
        return self.work / next(iter(self.coord_hosts)) / "admin" / "config.json"

    def spawn(self, name: str, argv: list[str], netns: str | None = None) -> Proc:
        """Start ``argv`` (inside ``netns`` if given: network namespace only, via nsenter,
        which execs in place so the pid is the program's) in a session of its own."""
        self._spawned += 1
        log = self.logs / f"{name}.log"
        full = ["nsenter", f"--net=/var/run/netns/{netns}", *argv] if netns else argv
        with log.open("ab") as f:
            p = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, full, log, p)
        self.procs.append(proc)
        return proc

    async def _start_coordinators(self) -> None:
        py = [sys.executable, "-m", "cloudless", "coordinator"]
        common = [
            *("--api-port", str(API_PORT), "--agent-port", str(AGENT_PORT)),
            *("--enroll-port", str(ENROLL_PORT), "--etcd-client-port", str(ETCD_CLIENT)),
            *("--etcd-peer-port", str(ETCD_PEER), "--root-key-size", str(self.root_key_size)),
            *("--bcrypt-cost", str(self.bcrypt_cost)),
        ]
        first = "c1"
        for name, host in self.coord_hosts.items():
            args = [*py, "--data-dir", str(self.work / name), "--name", name, "--host", host.ip]
            if self.network and name == first:
                args += ["--network", f"{self.network},lighthouse={host.ip}:{LIGHTHOUSE_PORT}"]
            if name == first:
                self.coords[name] = self.spawn(name, [*args, "--bootstrap", *common], host.netns)
                admin = self.work / first / "admin" / "config.json"
                await wait_until("the first coordinator's admin config", admin.exists, 90)
                cfg = ClientConfig.load(admin)
                self.client = Client(cfg, timeout=10)
                await wait_until(
                    "the first coordinator to lead",
                    lambda: self.api.call("GET", "/healthz").get("is_leader"),
                    60,
                )
            else:
                tok = await asyncio.to_thread(self.api.create_token, use="coordinator-join")
                join = ["--join", self.api_url(first), "--token", tok]
                self.coords[name] = self.spawn(name, [*args, *join, *common], host.netns)
                want = len(self.coords)
                await wait_until(f"{name} to join", functools.partial(self._joined, want), 90)
                await wait_until(f"{name} to serve", functools.partial(self.healthz, name), 60)
        self.api.config.servers = [self.api_url(n) for n in self.coord_hosts]

    def _joined(self, want: int) -> bool:
        return len(self.api.call("GET", "/v1/cluster/coordinators")["coordinators"]) >= want

    def agent_dir(self, i: int) -> Path:
        return self.work / f"agent-a{i + 1}"

    async def _start_agent_first(self, i: int) -> None:
        host = self.agent_hosts[i]
        data = self.agent_dir(i)
        data.mkdir(parents=True, exist_ok=True)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mib}m,mode=0700", "tmpfs"]
        await asyncio.to_thread(subprocess.run, [*mount, str(data)], check=True)
        self.mounts.append(data)
        if self.network_plan is not None:
            await asyncio.to_thread(self._forward_container_traffic, host)
        if self.storage and not host.veth:
            await asyncio.to_thread(self._forward_store_ports, i)
        ctrd = PrivateContainerd(self.work / f"containerd-a{i + 1}", netns=host.netns)
        self.containerds.append(ctrd)
        await ctrd.start()
        token = await asyncio.to_thread(self.api.create_token, ttl_seconds=600)
        self.agents.append(None)
        await self.start_agent(i, token=token)

    def _forward_container_traffic(self, host: Host) -> None:
        """Let the host forward to and from containers and services (the lab's hosts drop
        forwarded packets otherwise)."""
        assert self.network_plan is not None
        p = self.network_plan
        rules = "*filter\n"
        for net in (p.container_cidr, p.service_cidr):
            rules += f"-A FORWARD -s {net} -j ACCEPT\n-A FORWARD -d {net} -j ACCEPT\n"
        _apply_rules(host.netns, rules + "COMMIT\n", noflush=True)

    def _router(self, i: int) -> Host | None:
        """The NAT router in front of agent ``i``'s host, if it sits behind one."""
        return None if self.agent_hosts[i].veth else self.lab.hosts[f"r{i + 1}"]

    def _forward_store_ports(self, i: int) -> None:
        """Port-forward the store's two ports on agent ``i``'s router to its host."""
        router = self._router(i)
        assert router is not None
        ports = f"{STORE_S3_PORT},{STORE_RPC_PORT}"
        rules = (
            f"*nat\n-A PREROUTING -i eth0 -p tcp -m multiport --dports {ports} "
            f"-j DNAT --to-destination {self.agent_hosts[i].ip}\nCOMMIT\n"
        )
        _apply_rules(router.netns, rules, noflush=True)

    def store_address(self, i: int) -> str:
        """Where other hosts reach agent ``i``'s store: its address, or its router's."""
        router = self._router(i)
        return router.ip if router is not None else self.agent_hosts[i].ip

    def s3_endpoint(self, i: int) -> str:
        return f"http://{self.store_address(i)}:{STORE_S3_PORT}"

    def _storage_args(self, i: int) -> list[str]:
        if not self.storage:
            return []
        args = [
            *("--storage", self.storage, "--storage-replication", str(min(3, self.n_agents))),
            *("--storage-listen", f"0.0.0.0:{STORE_RPC_PORT}"),
            *("--s3-listen", f"0.0.0.0:{STORE_S3_PORT}"),
        ]
        if self.storage_grace is not None:
            args += ["--storage-grace", f"{self.storage_grace:g}"]
        if self._router(i) is not None:
            args += ["--storage-advertise", self.store_address(i)]
        return args

    async def start_agent(self, i: int, *, token: str = "") -> Proc:
        """(Re)start agent ``i``; without ``token`` it uses the identity on its data dir."""
        assert self.registry is not None
        host = self.agent_hosts[i]
        argv = [
            *(sys.executable, "-m", "cloudless", "agent", "--data-dir", str(self.agent_dir(i))),
            *("--name", f"{self.node_name}-{i + 1}", "--zone", self.zones[i % len(self.zones)]),
            *("--region", self.region, "--address", host.ip),
            *("--containerd-socket", self.containerds[i].address),
            *("--namespace", self.namespace, "--insecure-registry", self.registry.host),
        ]
        if self.network_plan is not None:
            argv += ["--netns-prefix", f"{self.lab.prefix}-n{i + 1}-"]
        argv += self._storage_args(i)
        if token:
            argv += ["--join", self.api_url(next(iter(self.coord_hosts))), "--token", token]
        old = self.agents[i]
        if old is not None and old.alive():
            raise ClusterError(f"agent {i} is still running (pid {old.pid})")
        p = self.spawn(f"agent-a{i + 1}", argv, host.netns)
        self.agents[i] = p
        return p

    # -- observation ------------------------------------------------------------------------

    def healthz(self, name: str) -> dict[str, Any] | None:
        """``/healthz`` of coordinator ``name`` alone (no failover), or None if it is down."""
        cfg = ClientConfig(
            servers=[self.api_url(name)],
            ca_file=self.api.config.ca_file,
            cert_file=self.api.config.cert_file,
            key_file=self.api.config.key_file,
        )
        try:
            return dict(Client(cfg, timeout=2).call("GET", "/healthz"))
        except (CloudlessError, OSError):
            return None

    def leader(self) -> str | None:
        """The name of the coordinator that says it leads (None if none does)."""
        for name, p in self.coords.items():
            if p.alive() and (h := self.healthz(name)) and h.get("is_leader"):
                return name
        return None

    def tasks(self, i: int) -> dict[str, str]:
        """Containerd's view on agent ``i``: container id -> task status (``RUNNING``,
        ``STOPPED``, ...; ``-`` for a container without a task)."""
        ctr = ["ctr", "-a", self.containerds[i].address, "-n", self.namespace]
        out: dict[str, str] = {}
        cs = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True)
        for cid in cs.stdout.split():
            out[cid] = "-"
        ts = subprocess.run([*ctr, "tasks", "ls"], capture_output=True, text=True)
        if cs.returncode != 0 or ts.returncode != 0:
            raise ClusterError(f"ctr on agent {i} failed: {cs.stderr.strip()} {ts.stderr.strip()}")
        for line in ts.stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = parts[2]
        return out

    def task_pid(self, i: int, container_id: str) -> int:
        """The pid of container ``container_id``'s task on agent ``i`` (the runc shim's
        ``init.pid`` in that containerd's state directory)."""
        d = self.containerds[i].root / "state" / "io.containerd.runtime.v2.task"
        try:
            return int((d / self.namespace / container_id / "init.pid").read_text())
        except (OSError, ValueError):
            raise ClusterError(f"container {container_id} has no task on agent {i}") from None

    async def exec_in(
        self, i: int, container_id: str, argv: Sequence[str], *, time_limit: float = 30.0
    ) -> tuple[int, str]:
        """Run ``argv`` inside container ``container_id`` on agent ``i``: in every namespace
        of its task and under its root (``nsenter``: what the replica itself sees of files
        and network; not its cgroup or capabilities; milliseconds where ``ctr tasks exec``
        takes a second or more on a loaded machine). ``(exit code, stdout and stderr)``.
        Raises ClusterError when it outlives ``time_limit`` seconds (after killing it)."""
        pid = self.task_pid(i, container_id)
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--target={pid}", "--all", "--root", "--wd", *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await within(time_limit, proc.communicate())
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ClusterError(
                f"`{' '.join(argv)}` in {container_id} took over {time_limit}s"
            ) from None
        rc = proc.returncode if proc.returncode is not None else -1
        return rc, out.decode(errors="replace")

    def running_containers(self) -> Counter[str]:
        """How many RUNNING tasks each container (= replica) id has, over every agent."""
        c: Counter[str] = Counter()
        for i in range(self.n_agents):
            for cid, st in self.tasks(i).items():
                if st == "RUNNING":
                    c[cid] += 1
        return c

    def node_state(self, i: int) -> str:
        return next(str(n["state"]) for n in self.api.nodes() if n["id"] == self.node_ids[i])

    def node(self, i: int) -> dict[str, Any]:
        return dict(self.api.call("GET", f"/v1/nodes/{self.node_ids[i]}"))

    # -- faults -----------------------------------------------------------------------------

    def kill_agent(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to agent ``i``'s process only (containerd and containers keep
        running); SIGKILL and SIGTERM also reap it."""
        p = self.agents[i]
        if p is None:
            return
        p.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.reap()

    def freeze_agent(self, i: int) -> None:
        p = self.agents[i]
        if p is not None:
            p.signal(signal.SIGSTOP)

    def thaw_agent(self, i: int) -> None:
        p = self.agents[i]
        if p is not None:
            p.signal(signal.SIGCONT)

    def cut(self, i: int) -> None:
        self.agent_hosts[i].cut()

    def heal(self, i: int) -> None:
        self.agent_hosts[i].heal()

    def cut_coordinator(self, name: str) -> None:
        self.coord_hosts[name].cut()

    def heal_coordinator(self, name: str) -> None:
        self.coord_hosts[name].heal()

    def kill_coordinator(self, name: str, *, whole_host: bool = True) -> None:
        """``kill -9`` coordinator ``name``; with ``whole_host`` every process of its namespace
        (the coordinator and its etcd member: a machine crash)."""
        p = self.coords[name]
        p.signal(signal.SIGKILL)
        if whole_host:
            self.coord_hosts[name].kill_all()
        p.reap()

    def restart_coordinator(self, name: str) -> Proc:
        """Start coordinator ``name`` again with its original arguments (its data dir holds
        the CA and etcd data, so ``--bootstrap``/``--join`` are skipped by the coordinator)."""
        old = self.coords[name]
        if old.alive():
            raise ClusterError(f"coordinator {name} is still running (pid {old.pid})")
        p = self.spawn(name, old.argv)
        self.coords[name] = p
        return p

    def etcd_pids(self, name: str) -> list[int]:
        """Every etcd process serving coordinator ``name``'s data dir (orphans included)."""
        etcd_dir = str(self.work / name / "etcd")
        out = []
        for pid in _pids_with_arg_under(etcd_dir):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "etcd":
                    out.append(pid)
        return out

    def etcd_pid(self, name: str) -> int | None:
        """The pid of coordinator ``name``'s etcd member (its child process)."""
        for pid in _proc.children_of(self.coords[name].pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "etcd":
                    return pid
        return None

    def kill_etcd(self, name: str) -> int:
        pid = self.etcd_pid(name)
        if pid is None:
            raise ClusterError(f"coordinator {name} has no etcd child process")
        _proc.kill(pid)
        return pid

    async def restart_containerd(self, i: int) -> None:
        """Stop and start agent ``i``'s containerd daemon; shims and containers survive."""
        await self.containerds[i].restart()

    def fill_disk(self, i: int, leave_bytes: int = 1 << 20) -> Path:
        """Fill agent ``i``'s data filesystem until ``leave_bytes`` are free; returns the
        ballast file (``free_disk`` removes it)."""
        d = self.agent_dir(i)
        ballast = d / "ballast"
        st = os.statvfs(d)
        free = st.f_bavail * st.f_frsize
        chunk = b"\0" * (1 << 20)
        n = max(0, free - leave_bytes)
        with ballast.open("ab") as f:
            while n > 0:
                k = min(n, len(chunk))
                f.write(chunk[:k])
                n -= k
        return ballast

    def free_disk(self, i: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.agent_dir(i) / "ballast").unlink()

    # -- teardown ---------------------------------------------------------------------------

    async def close(self) -> None:
        for h in [*self.agent_hosts, *self.coord_hosts.values()]:
            with contextlib.suppress(Exception):
                h.heal()
        # SIGKILL, not SIGTERM: nothing of the cluster outlives close(), so waiting for each
        # process's graceful stop buys nothing; the sweeps below remove what is left.
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            p.reap()
        for d in self.containerds:
            with contextlib.suppress(Exception):
                await d.stop(cleanup=True)
        if self.registry is not None:
            with contextlib.suppress(Exception):
                await self.registry.stop()
        # etcd members run in sessions of their own: the namespace sweep kills them
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.lab.teardown)
        with contextlib.suppress(Exception):  # volume images the agents left mounted
            await unmount_images(self.work)
        for m in self.mounts:
            await asyncio.to_thread(subprocess.run, ["umount", "-l", str(m)], check=False)
        remove_cgroups(f"/cloudless/{self.namespace}")

    def leftovers(self) -> list[str]:
        """What a teardown left behind: namespaces, live processes, mounts, cgroups."""
        out: list[str] = []
        prefix = self.lab.prefix + "-"
        ns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
        for n in json.loads(ns.stdout or "[]"):
            if str(n.get("name", "")).startswith(prefix):
                out.append(f"netns {n['name']}")
        for p in self.procs:
            if p.popen.poll() is None:
                out.append(f"process {p.name} (pid {p.pid})")
        work = str(self.work)
        for pid in _pids_with_arg_under(work):
            out.append(f"process {pid} with {work} in its arguments")
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(work + "/"):
                out.append(f"mount {target}")
        for root in (Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()):
            cg = root / "cloudless" / self.namespace
            if cg.is_dir():
                out.append(f"cgroup {cg}")
        return out


def _pids_with_arg_under(path: str) -> list[int]:
    """Processes with an argument naming ``path`` or something under it."""
    out = []
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(path.encode() in a for a in args):
            out.append(int(d.name))
    return out
