"""The main job (``make demo``): a local cluster running a sample workload, end to end.

1. three "devices": network namespaces on a bridge, each with its own address;
2. a private OCI registry on the bridge, seeded with a busybox image;
3. one coordinator (embedded etcd, a fresh RSA-4096 CA) on the bridge address;
4. three agents, one per device, each with its own containerd, enrolled with one-time tokens
   and labelled with a zone;
5. ``examples/hello.yaml`` applied: three HTTP servers spread over the three zones; each is
   fetched over the network to show it serves;
6. one device dies (every process in its namespace is killed: agent, containerd, containers);
   the demo measures how long until its replica runs elsewhere, and fetches it;
7. everything is torn down; exit 0 only if every step succeeded.

Every process is a real one: ``cloudless coordinator`` and ``cloudless agent`` run as separate
processes, containers are runc containers started through containerd's gRPC API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cloudless.cli.client import Client, ClientConfig
from cloudless.lib.errors import CloudlessError
from cloudless.lib.net import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello.yaml"
ZONES = ("zone-a", "zone-b", "zone-c")
console = Console(highlight=False)


class DemoFailed(CloudlessError):
    code = "demo_failed"


def step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan][{n}/7][/] [bold]{text}[/]")


def preflight() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (network namespaces, containerd and runc need it)")
    for binary in ("ip", "iptables", "etcd", "containerd", "runc", "docker-registry"):
        if shutil.which(binary) is None:
            problems.append(f"{binary} is missing: run `make setup` (scripts/install-system-deps)")
    if not Path("/bin/busybox").exists():
        problems.append("/bin/busybox is missing: apt-get install busybox-static")
    from cloudless.devenv.netns import netns_unavailable_reason

    why = netns_unavailable_reason()
    if why:
        problems.append(f"network namespaces unavailable: {why}")
    if problems:
        raise DemoFailed("cannot run the demo:\n  - " + "\n  - ".join(problems))


async def wait_until(
    what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.2
) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = await asyncio.to_thread(probe)
            if v:
                return v
        except CloudlessError as e:
            last = e
        await asyncio.sleep(interval)
    raise DemoFailed(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else "")
    )


def fetch(endpoint: str) -> str:
    with urllib.request.urlopen(f"http://{endpoint}/index.html", timeout=3) as r:
        return str(r.read().decode().strip())


def placement_table(client: Client, nodes: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="replicas of hello")
    for col in ("replica", "node", "zone", "state", "endpoint"):
        t.add_column(col)
    for r in sorted(client.workload("hello")["replicas"], key=lambda r: r["id"]):
        n = nodes.get(r["node_id"], {})
        t.add_row(
            r["id"],
            n.get("name", r["node_id"]),
            n.get("zone", "?"),
            r["observed"],
            r.get("endpoint", ""),
        )
    return t


def running(client: Client) -> list[dict[str, Any]]:
    reps = client.workload("hello")["replicas"]
    return [r for r in reps if r["observed"] == "running" and r["desired"] == "running"]


class LocalCluster:
    """Three devices in network namespaces, each with its own containerd and agent, a
    private registry with a busybox image, and one coordinator with its embedded etcd, all
    on one machine. ``up()`` starts it (steps 1-4 of the demo), ``down()`` removes every
    trace (processes, namespaces, mounts, cgroups). ``cloudless dev up`` keeps one running."""

    def __init__(self, work: Path, *, devices: int = 3, say: Callable[[int, str], None] = step):
        self.work = work
        self.devices = devices
        self.say = say
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.lab: Any = None
        self.registry: Any = None
        self.daemons: list[Any] = []
        self.hosts: list[Any] = []
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.client: Client | None = None
        self.image = ""
        self.api_url = ""
        self.admin_config = work / "coordinator" / "admin" / "config.json"

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    async def up(self) -> Client:
        from cloudless.devenv import PrivateContainerd, PrivateRegistry, build_busybox_image
        from cloudless.devenv.netns import NetnsLab, free_subnet

        preflight()
        self.say(1, f"{self.devices} devices: network namespaces on a bridge")
        self.lab = NetnsLab("cldemo", free_subnet(skip=0))
        await asyncio.to_thread(self.lab.setup)
        self.hosts = [await self.lab.add_host_async(f"dev{i + 1}") for i in range(self.devices)]
        gw = self.lab.gateway
        zones = [ZONES[i % len(ZONES)] for i in range(self.devices)]
        for h, z in zip(self.hosts, zones, strict=True):
            console.print(f"  {h.name}: {h.ip} ({z})")

        self.say(2, f"a private OCI registry on {gw}, seeded with busybox")
        self.registry = PrivateRegistry(bind=gw, root_dir=self.work / "registry")
        await self.registry.start()
        self.image = await build_busybox_image(self.registry, "busybox", "1")
        console.print(f"  pushed {self.image}")

        self.say(3, f"the coordinator on {gw} (embedded etcd, new RSA-4096 CA)")
        api_port = free_port(gw)
        self.api_url = f"https://{gw}:{api_port}"
        py = [sys.executable, "-m", "cloudless"]
        ports = {
            "--api-port": api_port,
            "--agent-port": free_port(gw),
            "--enroll-port": free_port(gw),
            "--etcd-client-port": free_port(gw),
            "--etcd-peer-port": free_port(gw),
        }
        argv = [*py, "coordinator", "--bootstrap", "--name", "coord-1", "--host", gw]
        argv += ["--data-dir", str(self.work / "coordinator")]
        for flag, port in ports.items():
            argv += [flag, str(port)]
        self.spawn("coordinator", argv)
        await wait_until("the coordinator's admin config", self.admin_config.exists, 90)
        client = self.client = Client(ClientConfig.load(self.admin_config))
        await wait_until(
            "the coordinator API", lambda: client.call("GET", "/healthz")["is_leader"], 60
        )
        console.print(f"  API {self.api_url}, admin config {self.admin_config}")

        self.say(4, f"{self.devices} agents, each with its own containerd, enrolled with tokens")
        for i, (h, zone) in enumerate(zip(self.hosts, zones, strict=True)):
            ctrd = PrivateContainerd(self.work / f"containerd-{h.name}", netns=h.netns)
            await ctrd.start()
            self.daemons.append(ctrd)
            token = await asyncio.to_thread(client.create_token, ttl_seconds=600)
            argv = ["nsenter", f"--net=/var/run/netns/{h.netns}", *py, "agent"]
            argv += ["--join", self.api_url, "--token", token, "--zone", zone]
            argv += ["--data-dir", str(self.work / f"agent-{h.name}"), "--name", f"device-{i + 1}"]
            argv += ["--region", "home", "--address", h.ip, "--containerd-socket", ctrd.address]
            argv += ["--insecure-registry", self.registry.host]
            self.agents[h.name] = self.spawn(f"agent-{h.name}", argv)
        n = self.devices
        await wait_until(
            f"{n} ready nodes",
            lambda: sum(x["state"] == "ready" for x in client.nodes()) == n,
            60,
        )
        return client

    async def down(self) -> None:
        from cloudless.devenv.containerd import remove_cgroups

        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                await asyncio.to_thread(p.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        for d in self.daemons:
            with contextlib.suppress(Exception):
                await d.stop(cleanup=True)
        if self.registry is not None:
            await self.registry.stop()
        if self.lab is not None:
            await asyncio.to_thread(self.lab.teardown)
        remove_cgroups("/cloudless")


class Demo:
    def __init__(self, work: Path) -> None:
        self.cluster = LocalCluster(work)

    async def run(self) -> float:
        lc = self.cluster
        try:
            client = await lc.up()
            nodes = {n["id"]: n for n in await asyncio.to_thread(client.nodes)}
            t = Table(title="nodes")
            for col in ("id", "name", "zone", "address", "state"):
                t.add_column(col)
            for n in nodes.values():
                t.add_row(n["id"], n["name"], n["zone"], n["address"], n["state"])
            console.print(t)
            return await self.scenario(client, nodes)
        finally:
            step(7, "tear down")
            await lc.down()
            console.print("  done")

    async def scenario(self, client: Client, nodes: dict[str, dict[str, Any]]) -> float:
        hosts = self.cluster.hosts
        image = self.cluster.image
        step(5, "apply examples/hello.yaml: 3 HTTP servers spread over 3 zones")
        spec = EXAMPLE.read_text().replace("127.0.0.1:5000/busybox:1", image)
        res = await asyncio.to_thread(client.apply, spec.encode())
        console.print(f"  workload hello {res['result']}")
        reps = await wait_until(
            "3 running replicas", lambda: len(r := running(client)) == 3 and r, 120
        )
        console.print(placement_table(client, nodes))
        zones = sorted(nodes[r["node_id"]]["zone"] for r in reps)
        if zones != list(ZONES):
            raise DemoFailed(f"replicas are not spread over the three zones: {zones}")
        for r in reps:
            body = await wait_until(
                f"an answer from {r['endpoint']}", functools.partial(fetch, r["endpoint"]), 30
            )
            console.print(f"  GET http://{r['endpoint']}/ -> {body!r}")

        step(6, "a device dies: every process in its namespace is killed")
        victim = reps[0]
        vnode = nodes[victim["node_id"]]
        vhost = next(h for h in hosts if h.ip == vnode["address"])
        console.print(
            f"  killing {vhost.name} ({vnode['name']}, {vnode['zone']}), which runs {victim['id']}"
        )
        t0 = time.monotonic()
        await asyncio.to_thread(vhost.kill_all)
        await wait_until(
            f"{vnode['name']} offline",
            lambda: any(n["id"] == vnode["id"] and n["state"] == "offline" for n in client.nodes()),
            60,
            interval=0.05,
        )
        detected = time.monotonic() - t0
        replaced = await wait_until(
            "a replacement running elsewhere",
            lambda: (
                len(r := [x for x in running(client) if x["node_id"] != vnode["id"]]) == 3 and r
            ),
            60,
            interval=0.05,
        )
        took = time.monotonic() - t0
        console.print(
            f"  node offline after {detected:.2f}s; replacement running after [bold]{took:.2f}s[/]"
        )
        console.print(placement_table(client, nodes))
        new = [r for r in replaced if r["id"] not in {x["id"] for x in reps}]
        for r in new:
            body = await wait_until(
                f"an answer from {r['endpoint']}", functools.partial(fetch, r["endpoint"]), 30
            )
            console.print(f"  GET http://{r['endpoint']}/ -> {body!r}")
        return took


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="cloudless-demo-"))
    try:
        took = asyncio.run(Demo(work).run())
    except CloudlessError as e:
        console.print(f"[bold red]demo failed:[/] {e}")
        console.print(f"logs: {work / 'logs'}")
        return 1
    except KeyboardInterrupt:
        return 130
    console.print(
        f"\n[bold green]demo passed[/]: a lost device's replica ran elsewhere after {took:.2f}s"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
