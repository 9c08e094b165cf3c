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


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    async def run(self) -> float:
        from cloudless.devenv import PrivateContainerd, PrivateRegistry, build_busybox_image
        from cloudless.devenv.netns import NetnsLab, free_subnet

        preflight()
        step(1, "three devices: network namespaces on a bridge")
        lab = NetnsLab("cldemo", free_subnet(skip=0))
        await asyncio.to_thread(lab.setup)
        registry: PrivateRegistry | None = None
        daemons: list[PrivateContainerd] = []
        try:
            hosts = [await lab.add_host_async(f"dev{i + 1}") for i in range(3)]
            gw = lab.gateway
            for h, z in zip(hosts, ZONES, strict=True):
                console.print(f"  {h.name}: {h.ip} ({z})")

            step(2, f"a private OCI registry on {gw}, seeded with busybox")
            registry = PrivateRegistry(bind=gw, root_dir=self.work / "registry")
            await registry.start()
            image = await build_busybox_image(registry, "busybox", "1")
            console.print(f"  pushed {image}")

            step(3, f"the coordinator on {gw} (embedded etcd, new RSA-4096 CA)")
            api_port = free_port(gw)
            coord_dir = self.work / "coordinator"
            py = [sys.executable, "-m", "cloudless"]
            self.spawn(
                "coordinator",
                [
                    *py,
                    "coordinator",
                    "--bootstrap",
                    "--data-dir",
                    str(coord_dir),
                    "--name",
                    "coord-1",
                    "--host",
                    gw,
                    "--api-port",
                    str(api_port),
                    "--agent-port",
                    str(free_port(gw)),
                    "--enroll-port",
                    str(free_port(gw)),
                    "--etcd-client-port",
                    str(free_port(gw)),
                    "--etcd-peer-port",
                    str(free_port(gw)),
                ],
            )
            admin = coord_dir / "admin" / "config.json"
            await wait_until("the coordinator's admin config", admin.exists, 90)
            client = Client(ClientConfig.load(admin))
            await wait_until(
                "the coordinator API", lambda: client.call("GET", "/healthz")["is_leader"], 60
            )
            console.print(f"  API https://{gw}:{api_port}, admin config {admin}")

            step(4, "three agents, each with its own containerd, enrolled with one-time tokens")
            agents = {}
            for i, (h, zone) in enumerate(zip(hosts, ZONES, strict=True)):
                ctrd = PrivateContainerd(self.work / f"containerd-{h.name}", netns=h.netns)
                await ctrd.start()
                daemons.append(ctrd)
                token = await asyncio.to_thread(client.create_token, ttl_seconds=600)
                agents[h.name] = self.spawn(
                    f"agent-{h.name}",
                    [
                        "nsenter",
                        f"--net=/var/run/netns/{h.netns}",
                        *py,
                        "agent",
                        "--join",
                        f"https://{gw}:{api_port}",
                        "--token",
                        token,
                        "--data-dir",
                        str(self.work / f"agent-{h.name}"),
                        "--name",
                        f"device-{i + 1}",
                        "--zone",
                        zone,
                        "--region",
                        "home",
                        "--address",
                        h.ip,
                        "--containerd-socket",
                        ctrd.address,
                        "--insecure-registry",
                        registry.host,
                    ],
                )
            nodes_ready = await wait_until(
                "3 ready nodes",
                lambda: (
                    (ns := client.nodes()) and sum(n["state"] == "ready" for n in ns) == 3 and ns
                ),
                60,
            )
            nodes = {n["id"]: n for n in nodes_ready}
            t = Table(title="nodes")
            for col in ("id", "name", "zone", "address", "state"):
                t.add_column(col)
            for n in nodes.values():
                t.add_row(n["id"], n["name"], n["zone"], n["address"], n["state"])
            console.print(t)

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
                f"  killing {vhost.name} ({vnode['name']}, {vnode['zone']}), "
                f"which runs {victim['id']}"
            )
            t0 = time.monotonic()
            await asyncio.to_thread(vhost.kill_all)
            await wait_until(
                f"{vnode['name']} offline",
                lambda: any(
                    n["id"] == vnode["id"] and n["state"] == "offline" for n in client.nodes()
                ),
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
                f"  node offline after {detected:.2f}s; "
                f"replacement running after [bold]{took:.2f}s[/]"
            )
            console.print(placement_table(client, nodes))
            new = [r for r in replaced if r["id"] not in {x["id"] for x in reps}]
            for r in new:
                body = await wait_until(
                    f"an answer from {r['endpoint']}", functools.partial(fetch, r["endpoint"]), 30
                )
                console.print(f"  GET http://{r['endpoint']}/ -> {body!r}")
            return took
        finally:
            step(7, "tear down")
            for p in self.procs:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
            for p in self.procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
            for d in daemons:
                with contextlib.suppress(Exception):
                    await d.stop(cleanup=True)
            if registry is not None:
                await registry.stop()
            await asyncio.to_thread(lab.teardown)
            from cloudless.devenv.containerd import remove_cgroups

            remove_cgroups("/cloudless")
            console.print("  done")


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
