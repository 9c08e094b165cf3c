"""Three devices in namespaces (a lighthouse and two more) joined by Nebula, containers on CNI
bridges, services through nftables DNAT and names through the DNS responder.

Worked addresses (plan: overlay 100.64.0.0/24, containers 10.42.0.0/20 in /24s):
slot 0 lh: overlay 100.64.0.1, containers 10.42.0.0/24; slot 1 d1: 100.64.0.2, 10.42.1.0/24;
slot 2 d2: 100.64.0.3, 10.42.2.0/24. Devices sit on 192.168.77.0/24 (a switch namespace).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.dns_server import DnsServer
from cloudless.network.lab import Device, NetLab, bind_in_netns
from cloudless.network.nebula import NebulaCA
from cloudless.network.nft import NftContext, render
from cloudless.network.nft_apply import NftApplier
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec
from cloudless.network.testing import run

pytestmark = pytest.mark.netns

PLAN = AddressPlanConfig(overlay_cidr="100.64.0.0/24", container_cidr="10.42.0.0/20").plan()
# (busybox-static's `wget -T` segfaults on Debian 12: timeouts come from `timeout` instead)
CGI = '#!/bin/sh\necho "Content-type: text/plain"\necho\necho "$REMOTE_ADDR"\n'


def www(tmp: Path) -> Path:
    d = tmp / "www"
    (d / "cgi-bin").mkdir(parents=True)
    (d / "cgi-bin" / "ip").write_text(CGI)
    (d / "cgi-bin" / "ip").chmod(0o755)
    (d / "index.html").write_text("hello from a container\n")
    return d


async def eventually(what: str, check, timeout: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    """Poll ``check()`` (sync, returns bool) until true; seconds it took."""
    t0 = time.monotonic()
    while True:
        if await asyncio.to_thread(check):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.2)


def remote_addr(cgi_output: str) -> str:
    """REMOTE_ADDR as busybox httpd (listening dual-stack) prints it: [::ffff:10.42.1.3]."""
    return cgi_output.strip().removeprefix("[::ffff:").removesuffix("]")


def service(name: str, vip: str, *eps: tuple[str, str]) -> Service:
    spec = ServiceSpec(ServiceKey("default", name), (ServicePort(80),))
    endpoints = tuple(Endpoint(ipaddress.IPv4Address(ip), rep, "d") for ip, rep in eps)
    return Service(spec, ipaddress.IPv4Address(vip), endpoints)


async def program(dev: Device, services: list[Service]) -> None:
    ctx = NftContext(dev.addresses.container_subnet, PLAN.containers, PLAN.cluster_ranges())
    await NftApplier(host_argv=dev.argv).apply(render(ctx, services))
    # device-local clients: the service range goes out the bridge, from the bridge address
    gw = dev.addresses.gateway
    route = ["ip", "route", "replace", str(PLAN.services), "dev", "cl0", "src", str(gw)]
    await asyncio.to_thread(run, [*dev.argv, *route])


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("i", tmp_path, PLAN)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.device("lh", 0, "pub", "192.168.77.1/24")
        lab.device("d1", 1, "pub", "192.168.77.11/24")
        lab.device("d2", 2, "pub", "192.168.77.12/24")
        yield lab
    finally:
        lab.close()


async def test_service_vip_and_name_across_devices(lab: NetLab, tmp_path: Path) -> None:
    d1, d2, lh = lab.devices["d1"], lab.devices["d2"], lab.devices["lh"]
    site = www(tmp_path)
    api = await lab.container(d2, "api")  # the only replica of "api", on d2
    loc = await lab.container(d1, "loc")  # a replica on the client's own device (hairpin)
    client = await lab.container(d1, "client", dns=str(d1.addresses.gateway))
    for dev, c in ((d2, "api"), (d1, "loc")):
        lab.nss.popen(
            lab.container_ns(dev, c), ["busybox", "httpd", "-f", "-p", "80", "-h", str(site)]
        )
    cns = lab.container_ns(d1, "client")

    await lab.nebula_everywhere("lh")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.nebula.run()) for d in (lh, d1, d2) if d.nebula]
        for d in (lh, d1, d2):
            assert d.nebula is not None
            await d.nebula.wait_active(15)
        # container to container across devices, over the overlay (unsafe_routes)
        await eventually(
            "client on d1 reaches api's container on d2",
            lambda: (
                lab.sh(cns, f"timeout 2 busybox wget -qO- http://{api.ip}/", check=False)
                == "hello from a container\n"
            ),
        )

        services = [
            service("api", "10.43.0.1", (api.ip, "api-0")),
            service("loc", "10.43.0.2", (loc.ip, "loc-0")),
        ]
        for dev in (d1, d2):
            await program(dev, services)

        # VIP from a container (prerouting), across devices, source address kept
        got = lab.sh(cns, "timeout 3 busybox wget -qO- http://10.43.0.1/cgi-bin/ip")
        assert remote_addr(got) == client.ip
        # VIP from the device itself (output hook): from its bridge address
        got = lab.sh(d1.ns, "timeout 3 busybox wget -qO- http://10.43.0.1/cgi-bin/ip")
        assert remote_addr(got) == str(d1.addresses.gateway)
        # hairpin: the backend is on the client's own bridge; masqueraded to the gateway
        got = lab.sh(cns, "timeout 3 busybox wget -qO- http://10.43.0.2/cgi-bin/ip")
        assert remote_addr(got) == str(d1.addresses.gateway)
        # ...but not straight to its address: containers of one device are isolated
        direct = lab.sh(cns, f"timeout 2 busybox wget -qO- http://{loc.ip}/", check=False)
        assert direct == ""

        # DNS from the responder on d1's bridge address
        gw = str(d1.addresses.gateway)
        socks = (
            bind_in_netns(d1.ns, socket.SOCK_DGRAM, (gw, 53)),
            bind_in_netns(d1.ns, socket.SOCK_STREAM, (gw, 53)),
        )
        dns = DnsServer(sockets=socks, namespace_of=lambda ip: "default")
        dns.set_services(services)
        t_dns = tg.create_task(dns.run())
        await dns.ready.wait()
        # (the responder runs on this loop: shell out from a thread)
        out = await asyncio.to_thread(lab.sh, cns, f"busybox nslookup api.default.cloudless {gw}")
        assert "10.43.0.1" in out
        got = await asyncio.to_thread(
            lab.sh, cns, "timeout 3 busybox wget -qO- http://api.default.cloudless/cgi-bin/ip"
        )
        assert remote_addr(got) == client.ip
        # the short name, through the container's resolv.conf search list
        got = await asyncio.to_thread(
            lab.sh, cns, "timeout 3 busybox wget -qO- http://api/cgi-bin/ip"
        )
        assert remote_addr(got) == client.ip

        # a removed device loses the overlay: its certificate blocklisted everywhere
        assert d2.nebula is not None and d2.nebula.config is not None
        fp = await _fingerprint(d2)
        for dev in (lh, d1):
            assert dev.nebula is not None and dev.nebula.config is not None
            cfg = dict(dev.nebula.config)
            cfg["pki"] = dict(cfg["pki"], blocklist=[fp])
            assert await dev.nebula.apply(cfg) == "reload"
        took = await eventually(
            "d1 loses its tunnel to the blocklisted d2",
            lambda: lab.sh(cns, f"timeout 1 busybox wget -qO- http://{api.ip}/", check=False) == "",
            timeout=15,
        )
        print(f"blocklisted device lost the overlay after {took:.2f}s")
        t_dns.cancel()
        for t in tasks:
            t.cancel()


async def _fingerprint(dev: Device) -> str:
    assert dev.nebula is not None and dev.nebula.config is not None
    return await NebulaCA("/nonexistent").fingerprint(dev.nebula.config["pki"]["cert"])
