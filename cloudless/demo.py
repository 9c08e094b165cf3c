"""The main job (``make demo``): a local cluster running a sample workload, end to end.

1. a local cluster (``cloudless.devenv.cluster.NetnsCluster``): a coordinator host and three
   "devices", each a network namespace on a bridge with its own address, the last one behind
   a NAT router namespace; a private OCI
   registry on the bridge seeded with busybox; the coordinator with its embedded etcd and a
   fresh RSA-4096 CA; three agents, one per device, each with its own containerd, enrolled
   with one-time tokens and labelled with a zone;
2. ``examples/hello.yaml`` applied: three HTTP servers spread over the three zones, each in
   a network namespace of its own with an address from its device's subnet; each is fetched
   from the first device (the others' through the Nebula overlay, the coordinator being the
   lighthouse); then a client container calls the ``hello`` service by name (cluster DNS,
   virtual IP) and the demo shows which replica, on which device, answered;
3. one device dies (every process in its namespace is killed: agent, containerd, containers);
   the demo measures how long until its replica runs elsewhere, fetches it, and shows the
   client still reaching ``hello`` by name;
4. ``examples/webapp.yaml`` applied: a web tier that reaches its key-value tier by the service
   name ``kv:8080``; a value written through the web tier is read back through it after the
   kv container is killed (SIGKILL: restarted by its policy, its data on a volume) and after
   the kv node's agent restarts (it adopts the running containers);
6. everything is torn down and checked to leave nothing behind; exit 0 only if every step
   succeeded.

Every process is a real one: ``cloudless coordinator`` and ``cloudless agent`` run as separate
processes, containers are runc containers started through containerd's gRPC API.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cloudless.cli.actions import split_documents
from cloudless.cli.client import Client
from cloudless.demo_store import BUCKET, DemoStore, first_layout, s3_cli
from cloudless.devenv.cluster import STORE_S3_PORT, NetnsCluster, wait_until
from cloudless.devenv.netns import Host
from cloudless.lib.errors import CloudlessError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello.yaml"
WEBAPP = ROOT / "examples" / "webapp.yaml"
ZONES = ("zone-a", "zone-b", "zone-c")
STEPS = 6
console = Console(highlight=False)


class DemoFailed(CloudlessError):
    code = "demo_failed"


def step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan][{n}/{STEPS}][/] [bold]{text}[/]")


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


CLIENT = """
name: client
image: IMAGE
command: [sh, -c, "while true; do busybox timeout 2 busybox wget -qO- http://hello:8080/ ||
  echo no answer; busybox sleep 1; done"]
resources: {cpu: 50m, memory: 16Mi}
"""


def http_from(host: Host, url: str, post: str | None = None) -> str | None:
    """The body of a GET (or of a POST of ``post``) from inside a device's namespace, or None
    when there is no answer, an error status or an empty body."""
    cmd = ["busybox", "timeout", "8", "busybox", "wget", "-qO-"]
    if post is not None:
        cmd += ["--post-data", post]
    p = host.run([*cmd, url])
    out = p.stdout.strip()
    return out if p.returncode == 0 and out else None


def fetch_from(host: Host, endpoint: str) -> str | None:
    """GET the endpoint from inside a device's namespace (container addresses are routed
    there: its own bridge, the other devices' subnets through the overlay)."""
    url = f"http://{endpoint}/index.html"
    p = host.run(["busybox", "timeout", "3", "busybox", "wget", "-qO-", url])
    out = p.stdout.strip()
    return out if p.returncode == 0 and out else None


def client_says(client: Client, rid: str) -> list[str]:
    """The last lines the client replica printed."""
    try:
        raw = b"".join(client.stream(f"/v1/replicas/{rid}/logs?tail=3"))
    except CloudlessError:
        return []
    return [line for line in raw.decode(errors="replace").splitlines() if line.strip()]


def replica_nodes(client: Client, nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        r["id"]: nodes.get(r["node_id"], {}).get("name", r["node_id"])
        for r in client.workload("hello")["replicas"]
    }


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


def demo_cluster(work: Path, devices: int, progress: Callable[[str], None]) -> NetnsCluster:
    """The demo's cluster (also ``cloudless dev up``): one coordinator host and ``devices``
    agent hosts, each in a network namespace with its own address, each agent with its own
    containerd and an object-store node in its zone (R=3, or the number of devices if
    fewer); a private registry with busybox; the product's own key sizes and costs."""
    return NetnsCluster(
        work,
        coordinators=1,
        agents=devices,
        zones=ZONES,
        # another name lets two demos (two checkouts) run side by side
        prefix=os.environ.get("CLOUDLESS_DEMO_PREFIX", "cldemo"),
        namespace=os.environ.get("CLOUDLESS_DEMO_PREFIX", "cloudless-demo"),
        node_name="device",
        region="home",
        root_key_size=4096,
        bcrypt_cost=10,
        progress=progress,
        network="on",
        nat_agents=1 if devices > 1 else 0,
        storage="48Mi",  # within each device's 64 MiB data tmpfs
    )


class Demo:
    def __init__(self, work: Path) -> None:
        self.cluster = demo_cluster(work, 3, lambda line: console.print(f"  {line}"))

    async def run(self) -> float:
        c = self.cluster
        try:
            step(
                1,
                "a local cluster: 3 devices (one behind NAT), a registry, a coordinator, 3 agents",
            )
            preflight()
            await c.start()
            client = c.api
            nodes = {n["id"]: n for n in await asyncio.to_thread(client.nodes)}
            t = Table(title="nodes")
            for col in ("id", "name", "zone", "address", "state"):
                t.add_column(col)
            for n in nodes.values():
                t.add_row(n["id"], n["name"], n["zone"], n["address"], n["state"])
            console.print(t)
            return await self.scenario(client, nodes)
        finally:
            step(STEPS, "tear down")
            await c.close()
            left = c.leftovers()
            if left:
                raise DemoFailed(f"teardown left {', '.join(left)}")
            console.print("  done: no namespace, process, mount or cgroup left")

    async def scenario(self, client: Client, nodes: dict[str, dict[str, Any]]) -> float:
        c = self.cluster
        step(2, "apply examples/hello.yaml: 3 HTTP servers spread over 3 zones")
        spec = EXAMPLE.read_text().replace("127.0.0.1:5000/busybox:1", c.image)
        res = await asyncio.to_thread(client.apply, spec.encode())
        console.print(f"  workload hello {res['result']}")
        reps = await wait_until(
            "3 running replicas", lambda: len(r := running(client)) == 3 and r, 120
        )
        console.print(placement_table(client, nodes))
        zones = sorted(nodes[r["node_id"]]["zone"] for r in reps)
        if zones != list(ZONES):
            raise DemoFailed(f"replicas are not spread over the three zones: {zones}")
        here = c.agent_hosts[0]
        for r in reps:
            body = await wait_until(
                f"an answer from {r['endpoint']}",
                functools.partial(fetch_from, here, r["endpoint"]),
                30,
            )
            console.print(f"  GET http://{r['endpoint']}/ (from {here.name}) -> {body!r}")
        await self.start_client(client, nodes)
        store = await self.object_store(client, nodes)

        step(4, "a device dies: every process in its namespace is killed")
        victim = reps[0]
        vnode = nodes[victim["node_id"]]
        i = c.node_ids.index(vnode["id"])
        vhost = c.agent_hosts[i]
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
        alive = next(
            h for h, nid in zip(c.agent_hosts, c.node_ids, strict=True) if nid != vnode["id"]
        )
        for r in new:
            body = await wait_until(
                f"an answer from {r['endpoint']}",
                functools.partial(fetch_from, alive, r["endpoint"]),
                30,
            )
            console.print(f"  GET http://{r['endpoint']}/ (from {alive.name}) -> {body!r}")
        await self.show_client(client, nodes, exclude=victim["id"])
        await store.survive(i)
        await self.webapp(client, nodes, alive)
        return took

    async def object_store(self, client: Client, nodes: dict[str, dict[str, Any]]) -> DemoStore:
        """Step 3: the store's first layout, a key and a bucket made with ``cloudless s3``,
        an object put and read back through boto3, then fetched by a workload from
        ``s3.cloudless`` (the cluster's S3 service: a VIP balanced over every device serving
        the S3 API) with a presigned URL."""
        c = self.cluster
        step(3, "the object store: a storage node on each device, R=3 over three zones")
        lines = await wait_until("the store's first layout", functools.partial(first_layout, c), 90)
        for line in lines:
            console.print(f"  {line}", markup=False)
        out = await asyncio.to_thread(s3_cli, c, "key", "create", "demo")
        key_id = out.split("access key id:")[1].split()[0]
        secret = out.split("secret access key:")[1].split()[0]
        console.print(f"  $ cloudless s3 key create demo -> access key id {key_id}")
        out = await asyncio.to_thread(s3_cli, c, "bucket", "create", BUCKET, "--owner", key_id)
        console.print(f"  $ cloudless s3 bucket create {BUCKET} --owner {key_id} -> {out.strip()}")
        store = DemoStore(c, key_id, secret, lambda line: console.print(f"  {line}"))
        await store.put_and_get(0, "hello.txt", (GREETING + "\n").encode() * 4)
        url = store.presigned("hello.txt", f"http://s3.cloudless:{STORE_S3_PORT}")
        spec = S3_READER.replace("IMAGE", c.image).replace("URL", url)
        await asyncio.to_thread(client.apply, spec.encode())
        rid, node = await wait_until(
            "the s3-reader workload running",
            functools.partial(running_replica, client, "s3-reader"),
            60,
        )
        await wait_until(
            f"{rid} to fetch the object from s3.cloudless",
            lambda: GREETING in client_says(client, rid),
            60,
        )
        where = nodes.get(node, {}).get("name", "?")
        console.print(
            f"  workload s3-reader ({rid} on {where}) fetched it by name: GET "
            f"http://s3.cloudless:{STORE_S3_PORT}/{BUCKET}/hello.txt?X-Amz-Signature=… "
            f"-> {GREETING!r}"
        )
        svc = await asyncio.to_thread(client.call, "GET", "/v1/services/s3?namespace=system")
        serving = sorted(str(e.get("node_name", "?")) for e in svc["endpoints"])
        console.print(
            f"  s3.cloudless = s3.system.cloudless = {svc['vip']}: {svc['ready']}/{svc['total']} "
            f"devices serving S3 ({', '.join(serving)})"
        )
        await asyncio.to_thread(client.call, "DELETE", "/v1/workloads/s3-reader")
        return store

    async def webapp(self, client: Client, nodes: dict[str, dict[str, Any]], here: Host) -> None:
        """Step 5: the two-tier example; its data outlives a kill of the database container
        and a restart of its node's agent."""
        c = self.cluster
        step(5, "apply examples/webapp.yaml: a web tier that reaches its kv tier by name")
        password = secrets.token_urlsafe(18)
        secret = {"name": "kv-pass", "data": b64(password.encode()), "type": "opaque"}
        await asyncio.to_thread(client.call, "POST", "/v1/secrets", secret)
        for name in ("kv", "web"):
            cgi = b64((WEBAPP.parent / "webapp" / f"{name}.cgi").read_bytes())
            await asyncio.to_thread(
                client.call, "POST", "/v1/configs", {"name": f"{name}-cgi", "data": cgi}
            )
        spec = WEBAPP.read_text().replace("127.0.0.1:5000/busybox:1", c.image)
        for body in split_documents(spec.encode()):
            await asyncio.to_thread(client.apply, body)
        console.print("  secret kv-pass, configs kv-cgi and web-cgi; workloads kv and web")
        web, kv = await wait_until(
            "kv-0 and 2 web replicas ready", functools.partial(webapp_ready, client), 120
        )
        console.print(webapp_table(client, nodes))
        svc = await asyncio.to_thread(client.call, "GET", "/v1/services/kv")
        console.print(f"  kv.default.cloudless = {svc['vip']}: web calls it as kv:8080")

        write_url, read_url = (f"http://{w['endpoint']}/cgi-bin/app?key=greeting" for w in web)
        value = f"written through {web[0]['id']} at {time.strftime('%H:%M:%S')}"
        said = await wait_until(
            f"{web[0]['id']} to store a value in kv",
            functools.partial(http_from, here, write_url, value),
            30,
        )
        if said != "stored":
            raise DemoFailed(f"a write through {web[0]['id']} got {said!r}, not 'stored'")
        console.print(f"  POST {write_url} {value!r} -> {said!r}")

        async def read_back(when: str) -> float:
            t0 = time.monotonic()
            await wait_until(
                f"{value!r} back through {web[1]['id']} {when}",
                lambda: http_from(here, read_url) == value,
                60,
            )
            return time.monotonic() - t0

        await read_back("")
        console.print(f"  GET {read_url} -> {value!r}")

        i = c.node_ids.index(kv["node_id"])
        where = nodes[kv["node_id"]]["name"]
        kill = ["ctr", "-a", c.containerds[i].address, "-n", c.namespace]
        kill += ["task", "kill", "-s", "SIGKILL", "kv-0"]
        p = await asyncio.to_thread(subprocess.run, kill, capture_output=True, text=True)
        if p.returncode != 0:
            raise DemoFailed(f"could not kill kv-0 on {where}: {p.stderr.strip()}")
        t0 = time.monotonic()
        again = await wait_until(
            "kv-0 restarted and ready",
            lambda: (
                (r := kv_replica(client)) and r["restarts"] > kv["restarts"] and r["ready"] and r
            ),
            60,
        )
        await read_back("after the kill")
        console.print(
            f"  kv-0 on {where} killed (SIGKILL): restarted by its policy, at "
            f"{again['endpoint']}; the value read back through web "
            f"after [bold]{time.monotonic() - t0:.2f}s[/]"
        )

        t0, restarted_at = time.monotonic(), time.time()
        await asyncio.to_thread(c.kill_agent, i, signal.SIGTERM)
        if (old := c.agents[i]) is not None and old.alive():
            raise DemoFailed(f"the agent on {where} did not stop within 10 s of SIGTERM")
        await c.start_agent(i)
        await wait_until(
            f"the agent on {where} back (a heartbeat from the new process)",
            lambda: c.node(i)["last_heartbeat"] > restarted_at + 0.5,
            60,
        )
        after = await wait_until(
            "kv-0 ready after the agent restart",
            lambda: (r := kv_replica(client))["ready"] and r,
            60,
        )
        # an adopted task's start time is read from /proc: within a second of the first
        if abs(after["started_at"] - again["started_at"]) >= 1.0:
            raise DemoFailed("the restarted agent recreated kv-0 instead of adopting it")
        await read_back("after the agent restart")
        console.print(
            f"  the agent on {where} restarted (SIGTERM, then started again): kv-0 adopted, "
            f"the value read back through web after [bold]{time.monotonic() - t0:.2f}s[/]"
        )

    async def start_client(self, client: Client, nodes: dict[str, dict[str, Any]]) -> None:
        c = self.cluster
        await asyncio.to_thread(client.apply, CLIENT.replace("IMAGE", c.image).encode())
        rid, node = await wait_until("the client running", functools.partial(client_at, client), 60)
        cnode = nodes.get(node, {}).get("name", "?")
        console.print(f"  client {rid} on {cnode} runs: wget http://hello:8080/ every second")
        await self.show_client(client, nodes)

    async def show_client(
        self, client: Client, nodes: dict[str, dict[str, Any]], exclude: str = ""
    ) -> None:
        """Wait for the (current) client replica to print an answer from a replica other
        than ``exclude``."""

        def answered() -> tuple[str, str] | None:
            at = client_at(client)
            if at is None:
                return None
            lines = client_says(client, at[0])
            ok = [x for x in lines if x.startswith("hello from") and not (exclude and exclude in x)]
            return (ok[-1], at[1]) if ok else None

        line, cnode = await wait_until("the client to reach hello by name", answered, 60)
        svc = await asyncio.to_thread(client.call, "GET", "/v1/services/hello")
        who = line.removeprefix("hello from ").strip()
        where = (await asyncio.to_thread(replica_nodes, client, nodes)).get(who, "?")
        name = nodes.get(cnode, {}).get("name", "?")
        console.print(
            f"  hello.default.cloudless = {svc['vip']} ({svc['ready']}/{svc['total']} endpoints);"
            f" the client on {name} got {line!r} (a replica on {where})"
        )


GREETING = "hello from the Cloudless object store"
# a workload reaching the cluster's S3 service by name (``s3.cloudless``: the VIP of
# ``s3.system``, whose endpoints are the devices serving the S3 API) through a presigned URL
S3_READER = """
name: s3-reader
image: IMAGE
command: [sh, -c, "while true; do busybox timeout 5 busybox wget -qO- 'URL' ||
  echo no answer; busybox sleep 2; done"]
resources: {cpu: 50m, memory: 16Mi}
"""


def running_replica(client: Client, workload: str) -> tuple[str, str] | None:
    """(replica id, node id) of a running replica of ``workload``, if one runs."""
    for r in client.workload(workload)["replicas"]:
        if r["observed"] == "running" and r["desired"] == "running":
            return str(r["id"]), str(r["node_id"])
    return None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kv_replica(client: Client) -> dict[str, Any]:
    return next(r for r in client.workload("kv")["replicas"] if r["id"] == "kv-0")


def webapp_ready(client: Client) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """(the 2 web replicas, kv-0) once all three run and pass their readiness checks."""
    up = {
        name: sorted(
            (
                r
                for r in client.workload(name)["replicas"]
                if r["desired"] == "running" and r["observed"] == "running" and r["ready"]
            ),
            key=lambda r: str(r["id"]),
        )
        for name in ("web", "kv")
    }
    return (up["web"], up["kv"][0]) if len(up["web"]) == 2 and len(up["kv"]) == 1 else None


def webapp_table(client: Client, nodes: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="replicas of web and kv")
    for col in ("replica", "node", "ready", "endpoint"):
        t.add_column(col)
    for name in ("web", "kv"):
        for r in sorted(client.workload(name)["replicas"], key=lambda r: r["id"]):
            n = nodes.get(r["node_id"], {}).get("name", r["node_id"])
            t.add_row(r["id"], n, "yes" if r["ready"] else "no", r.get("endpoint", ""))
    return t


def client_at(client: Client) -> tuple[str, str] | None:
    """(replica id, node id) of the running client replica, if one runs."""
    return running_replica(client, "client")


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
        f"\n[bold green]demo passed[/]: a lost device's replica ran elsewhere after {took:.2f}s;"
        " the object store served and took writes without it; the web app's data outlived a"
        " kill of its database and an agent restart"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
