"""The agent's networking end to end with real containerd, in a namespace lab.

Three hosts on a LAN switch: ``lh`` runs the coordinator's lighthouse (``network.lighthouse``,
tun off), ``d1`` is public, ``d2`` sits behind a NAT router on its own home switch. The
``NetworkPublisher`` (over a MemoryStore holding the slots and the service, as the controller
writes them) issues each device its Nebula certificate and hands its message to the device's
``AgentNetwork`` (the hub does this on the stream). Each device runs a ``Supervisor`` over a
real ``ContainerdRuntime`` (one private containerd, a containerd namespace per device):
``web-0`` (busybox httpd on its declared port 80) on d2, ``client-0`` on d1. The client
container resolves ``web`` through d1's DNS responder (its resolv.conf), reaches the VIP, is
DNATed to web-0's container address and carried by Nebula through the NAT to d2; web-0 sees
the client container's own address. ``pub-0`` on d1 publishes its port 80 on d1's 18080
(``ports: [{port: 80, publish: 18080}]``, CNI portmap): lh reaches it at d1's LAN address and
pub-0 sees lh's own address. Then web-0 is replaced by web-1 (another address): the
name answers again once web-1 is published.

The object store's S3 API as the cluster service ``s3.system``: d2 serves it on every address
(the real S3 front over a one-node store, on a socket in d2's namespace), its registration
carries d2's bridge address as ``AgentNetwork.gateway`` gives it, and ``s3_endpoints`` makes
that the service's one endpoint; ``client-0`` on d1, which runs no store node, fetches an
object from ``s3.cloudless:3900`` with a presigned URL (DNS alias -> VIP -> DNAT to
10.42.1.1:3900 -> overlay through the NAT). Once d1 serves S3 too, its workloads use its
own API (``local-first``); once d1's beat is stale, d2's again; with both S3 APIs stopped the
VIP refuses at once.

Slots: d1 = 0 (10.42.0.0/24, overlay 100.64.0.1), d2 = 1 (10.42.1.0/24, 100.64.0.2); the
lighthouse holds the overlay's last address, 100.64.0.254 (/24: .255 is the broadcast).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudless.agent.network import AgentNetwork
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
)
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import PublishedPort, WorkloadSpec
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.lab import NetLab
from cloudless.network.lighthouse import Lighthouse
from cloudless.network.nebula import NebulaCA
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.s3_service import s3_endpoints, s3_spec
from cloudless.network.services import (
    ReplicaAddress,
    ServiceKey,
    ServicePort,
    ServiceSpec,
    endpoint_set,
)
from cloudless.network.state import assign_device, assign_service, set_endpoints
from cloudless.network.testing import run, sweep_dead_runs
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.members import StorageNode
from cloudless.objectstore.s3.iam import Iam
from cloudless.objectstore.s3.server import S3Server
from cloudless.objectstore.testing import running
from cloudless.runtime.containerd import ContainerdRuntime
from cloudless.store.memory import MemoryStore
from tests.integration.network.test_overlay_services import remote_addr

pytestmark = [pytest.mark.netns, pytest.mark.integration]

BASE = "cl14-"
CFG = AddressPlanConfig(overlay_cidr="100.64.0.0/24", container_cidr="10.42.0.0/20")
PLAN = CFG.plan()
LH_ADDR = "192.168.77.1:4242"
WEB_URL = "http://web/cgi-bin/ip"  # the short name: resolv.conf searches default.cloudless
# (the test image links few applets: the others run as `busybox <applet>`)
WEB_CMD = (
    "busybox mkdir -p /w/cgi-bin && busybox printf '#!/bin/sh\\necho Content-type: text/plain"
    "\\necho\\necho $REMOTE_ADDR\\n' > /w/cgi-bin/ip && busybox chmod +x /w/cgi-bin/ip && "
    "exec httpd -f -p 80 -h /w"
)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    sweep_dead_runs(BASE)
    lab = NetLab("a", tmp_path, PLAN, base=BASE)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.switch("home", "192.168.88.0/24")
        lab.device("lh", 0, "pub", "192.168.77.1/24")  # its slot is unused: the lighthouse
        lab.device("d1", 0, "pub", "192.168.77.11/24")
        lab.router("nat", "pub", "192.168.77.2/24", "home", "192.168.88.1/24", symmetric=False)
        lab.device("d2", 1, "home", "192.168.88.11/24", gateway="192.168.88.1")
        yield lab
    finally:
        lab.close()


def workload(
    name: str, image: str, command: str, ports: tuple[int, ...], index: int = 0
) -> Assigned:
    spec = WorkloadSpec(
        name=name, image=image, command=("sh", "-c", command), ports=ports, stop_timeout_s=1
    )
    return Assigned(f"{name}-{index}", name, 1, spec)


async def wait_for(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_container_reaches_a_service_behind_nat_by_name(lab: NetLab, tmp_path: Path) -> None:
    clock = SystemClock()
    store = MemoryStore(clock)
    ca = NebulaCA(tmp_path / "ca" / "nebula")
    lh_dev = lab.devices["lh"]
    lighthouse = Lighthouse(ca, PLAN, LH_ADDR, tmp_path / "lh", host_argv=lh_dev.argv)
    nets = {
        name: AgentNetwork(
            tmp_path / name,
            name,
            public=name == "d1",
            clock=clock,
            host_netns=lab.devices[name].ns,
            netns_prefix=f"{lab.nss.prefix}-{name}-c-",
            attach_timeout=60,
        )
        for name in ("d1", "d2")
    }

    def repush(nodes: object) -> None:  # what the hub does: send each node its message
        assert isinstance(nodes, list)
        for n in nodes:
            nets[n].update(pub.config_for(n))

    pub = NetworkPublisher(
        store, CFG, clock, repush, ca=ca, lighthouses={str(PLAN.lighthouse_ip): [LH_ADDR]}
    )
    await assign_device(store, PLAN, "d1")  # slot 0
    await assign_device(store, PLAN, "d2")  # slot 1
    web_key = ServiceKey("default", "web")
    vip = await assign_service(store, PLAN, ServiceSpec(web_key, (ServicePort(80),)))

    async with (
        PrivateRegistry(root_dir=tmp_path / "reg") as reg,
        PrivateContainerd(tmp_path / "ctrd") as cd,
    ):
        image = await build_busybox_image(reg, "busybox", "1")
        runtimes = {
            name: ContainerdRuntime(
                cd.address,
                data_dir=tmp_path / name / "rt",
                namespace=f"it-{name}-{secrets.token_hex(2)}",
                registry=reg.registry_config(),
            )
            for name in ("d1", "d2")
        }
        sups = {
            name: Supervisor(runtimes[name], clock, lambda: None, network=nets[name])
            for name in ("d1", "d2")
        }
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(lighthouse.run())]
            for name in ("d1", "d2"):
                tasks += [
                    tg.create_task(runtimes[name].run()),
                    tg.create_task(nets[name].run()),
                    tg.create_task(sups[name].run([])),
                ]
            try:
                assert await pub.refresh() == ["d1", "d2"]
                for name in ("d1", "d2"):
                    await nets[name].bring_up(pub.config_for(name))
                    assert nets[name].state == "up", nets[name].reason

                sups["d2"].assign([workload("web", image, WEB_CMD, (80,))])
                sups["d1"].assign([workload("client", image, "exec sleep 600", ())])

                def status(sup: Supervisor, rid: str) -> ReplicaState:
                    w = sup.workers.get(rid)
                    return w.status.state if w else ReplicaState.PENDING

                async def both_running() -> bool:
                    return (
                        status(sups["d2"], "web-0") is ReplicaState.RUNNING
                        and status(sups["d1"], "client-0") is ReplicaState.RUNNING
                    )

                await wait_for(both_running, 60, "web-0 and client-0 running")
                web = sups["d2"].workers["web-0"].status
                ip = web.endpoint.rsplit(":", 1)[0]
                assert web.endpoint.endswith(":80") and ip.startswith("10.42.1.")

                async def publish(replica: str, ip: str) -> None:
                    # what the controller does with the replica's report: an endpoint in d2's
                    # subnet; the publisher sends both devices the new table
                    es = endpoint_set(
                        web_key, [ReplicaAddress(replica, "d2", ip)], {"d2": PLAN.addresses(1)}
                    )
                    assert es.ignored == ()
                    await set_endpoints(store, web_key, es.endpoints, es.total)
                    assert await pub.refresh() == ["d1", "d2"]
                    await asyncio.sleep(0.5)

                client_ip = sups["d1"].workers["client-0"].net
                assert client_ip is not None and client_ip.ip.startswith("10.42.0.")
                rt1 = runtimes["d1"]

                async def fetch_by_name() -> str:
                    got = ""
                    for _ in range(40):  # the tunnel through the NAT comes up on first use
                        r = await rt1.exec_in_container(
                            "client-0",
                            ["busybox", "timeout", "3", "busybox", "wget", "-qO-", WEB_URL],
                            5,
                        )
                        got = r.output
                        if r.exit_code == 0 and got.strip():
                            break
                        await asyncio.sleep(0.5)
                    return got

                await publish("web-0", ip)
                got = await fetch_by_name()
                assert remote_addr(got) == client_ip.ip, got
                r = await rt1.exec_in_container(
                    "client-0", ["busybox", "nslookup", "web.default.cloudless"], 5
                )
                assert vip.vip in r.output, r.output
                r = await rt1.exec_in_container("client-0", ["cat", "/etc/resolv.conf"], 5)
                assert r.output.startswith("nameserver 10.42.0.1"), r.output

                await _s3_by_name(lab, tmp_path, store, pub, nets, rt1)

                # a published port: d1's 18080 forwards to pub-0's 80 (CNI portmap); a host on
                # the LAN (lh) reaches it at d1's own address and pub-0 sees lh's address
                pub_spec = replace(
                    workload("pub", image, WEB_CMD, (80,)).spec,
                    published=(PublishedPort(80, 18080),),
                )
                sups["d1"].assign(
                    [
                        workload("client", image, "exec sleep 600", ()),
                        Assigned("pub-0", "pub", 1, pub_spec),
                    ]
                )

                async def pub_running() -> bool:
                    return status(sups["d1"], "pub-0") is ReplicaState.RUNNING

                await wait_for(pub_running, 60, "pub-0 running")
                url = "http://192.168.77.11:18080/cgi-bin/ip"
                wget = ["busybox", "timeout", "3", "busybox", "wget", "-qO-", url]
                got = ""
                for _ in range(20):
                    got = await asyncio.to_thread(run, [*lh_dev.argv, *wget], check=False)
                    if got.strip():
                        break
                    await asyncio.sleep(0.5)
                assert remote_addr(got) == "192.168.77.1", got

                # the replica is replaced: web-0's container, namespace and address go, web-1
                # gets an address of its own, and the name works again once it is published
                sups["d2"].assign([workload("web", image, WEB_CMD, (80,), index=1)])
                await wait_for(
                    lambda: _gone(lab, f"{lab.nss.prefix}-d2-c-web-0"), 30, "web-0's netns gone"
                )

                async def web1_running() -> bool:
                    return status(sups["d2"], "web-1") is ReplicaState.RUNNING

                await wait_for(web1_running, 60, "web-1 running")
                ip1 = sups["d2"].workers["web-1"].status.endpoint.rsplit(":", 1)[0]
                assert ip1 != ip and ip1.startswith("10.42.1.")
                await publish("web-1", ip1)
                got = await fetch_by_name()
                assert remote_addr(got) == client_ip.ip, got
            finally:
                for t in tasks:
                    t.cancel()
        for rt in runtimes.values():
            with contextlib.suppress(Exception):
                await rt.close()


async def _s3_by_name(
    lab: NetLab,
    tmp_path: Path,
    store: MemoryStore,
    pub: NetworkPublisher,
    nets: dict[str, AgentNetwork],
    rt1: ContainerdRuntime,
) -> None:
    """The S3 service end to end (see the module docstring). Each device's S3 front serves a
    store of its own holding a different body under one name, so the body fetched tells which
    device answered."""
    import boto3
    from aiohttp import web
    from botocore.config import Config

    from cloudless.network.lab import bind_in_netns

    clock = SystemClock()
    iam = Iam(store, clock)
    key = await iam.create_key("reader")
    await iam.create_bucket("media", key.key_id)
    devices = {"d1": PLAN.addresses(0), "d2": PLAN.addresses(1)}

    signer = boto3.client(
        "s3",
        endpoint_url="http://s3.cloudless:3900",
        aws_access_key_id=key.key_id,
        aws_secret_access_key=key.secret,
        region_name="cloudless",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": "media", "Key": "hello.txt"}, ExpiresIn=600
    )
    wget = ["busybox", "timeout", "3", "busybox", "wget", "-qO-", url]

    async def fetch() -> str:
        got = ""
        for _ in range(20):  # the first packet through the NAT may be lost
            r = await rt1.exec_in_container("client-0", wget, 5)
            got = r.output
            if r.exit_code == 0:
                break
            await asyncio.sleep(0.3)
        return got

    def registration(dev: str, serving: bool) -> StorageNode:
        """As the device's StorageService registers: S3 on every address, its bridge address
        (``AgentNetwork.gateway``) while it serves."""
        gw = nets[dev].gateway() if serving else None
        s3_gateway = f"{gw}:3900" if gw else ""
        return StorageNode(dev, "home", 10**9, "https://h:3901", "http://h:3900", 1, s3_gateway)

    async def publish(regs: dict[str, StorageNode], silent: dict[str, float]) -> list[str]:
        es = s3_endpoints(regs, silent, devices)
        await set_endpoints(store, es.key, es.endpoints, es.total)
        assert await pub.refresh() == ["d1", "d2"]
        want = [e.ip for e in es.endpoints]
        for _ in range(250):  # until d1 (the client's device) programmed the new endpoints
            cfg = nets["d1"].config
            got = (
                [[e.ip for e in x.endpoints] for x in cfg.services if x.key == es.key]
                if cfg
                else []
            )
            if got == [want]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"d1 did not program the S3 endpoints {want}")
        return [str(ip) for ip in want]

    svc = await assign_service(store, PLAN, s3_spec())
    async with contextlib.AsyncExitStack() as stack:
        for dev in ("d2", "d1"):
            c = await stack.enter_async_context(
                running(tmp_path / f"store-{dev}", {dev: NodeRole("home", 10**9)}, 1)
            )
            body = f"from {dev}\n".encode()
            await c.engine(dev).put(
                "media", "hello.txt", _chunks(body), content_type="text/plain", user_meta={}
            )
            runner = web.AppRunner(S3Server(c.engine(dev), iam, clock).app(), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            sock = await asyncio.to_thread(
                bind_in_netns, lab.devices[dev].ns, socket.SOCK_STREAM, ("0.0.0.0", 3900)
            )
            await web.SockSite(runner, sock).start()  # every address of the device, port 3900

        # only d2 serves S3; client-0 runs on d1, which has no store node
        assert nets["d2"].gateway() == "10.42.1.1" and nets["d1"].gateway() == "10.42.0.1"
        regs = {"d2": registration("d2", True), "d1": registration("d1", False)}
        assert await publish(regs, {}) == ["10.42.1.1"]
        assert await fetch() == "from d2\n"
        r = await rt1.exec_in_container("client-0", ["busybox", "nslookup", "s3.cloudless"], 5)
        assert svc.vip in r.output.split("s3.cloudless", 1)[-1], r.output

        # d1 serves S3 too: its own workloads use its own API (local-first), every time
        regs["d1"] = registration("d1", True)
        assert await publish(regs, {}) == ["10.42.0.1", "10.42.1.1"]
        # six fetches in one exec (at random over two endpoints, six in a row: 1 in 64)
        loop6 = 'for i in 1 2 3 4 5 6; do busybox timeout 3 busybox wget -qO- "$0"; done'
        r = await rt1.exec_in_container("client-0", ["sh", "-c", loop6, url], 20)
        assert r.output == "from d1\n" * 6, r.output

        # d1's beat stands still past the stale time: d2 answers again
        assert await publish(regs, {"d1": 25.0}) == ["10.42.1.1"]
        assert await fetch() == "from d2\n"

    # both S3 APIs stopped (their registrations say so): no endpoint, refused at once
    regs = {dev: registration(dev, False) for dev in ("d1", "d2")}
    assert await publish(regs, {}) == []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await rt1.exec_in_container("client-0", wget, 5)
    assert r.exit_code != 0 and loop.time() - t0 < 2.5, (r.exit_code, r.output)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _gone(lab: NetLab, ns: str) -> bool:
    out = await asyncio.to_thread(run, ["ip", "netns", "list"], check=False)
    return ns not in out
