"""``DeviceNetwork`` as an agent would run it, on two devices of a namespace lab joined by
Nebula: containers attached through it, services programmed through it, names answered by its
responder (short names from the asker's namespace), a VIP without endpoints refused at once.

Slots as in test_overlay_services: d1 = 10.42.1.0/24 (gateway 10.42.1.1), d2 = 10.42.2.0/24.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudless.network.bringup import DeviceNetwork
from cloudless.network.device import ContainerNetworks, IpNetns
from cloudless.network.lab import Device, NetLab
from cloudless.network.nft_apply import NftApplier
from cloudless.network.services import Endpoint, Service, ServiceKey, ServicePort, ServiceSpec
from tests.integration.network.test_overlay_services import PLAN, remote_addr, www

pytestmark = pytest.mark.netns


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("d", tmp_path, PLAN)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.device("lh", 0, "pub", "192.168.77.1/24")
        lab.device("d1", 1, "pub", "192.168.77.11/24")
        lab.device("d2", 2, "pub", "192.168.77.12/24")
        yield lab
    finally:
        lab.close()


def device_network(lab: NetLab, d: Device) -> DeviceNetwork:
    nets = ContainerNetworks(d.cni, IpNetns(), prefix=f"{lab.nss.prefix}-{d.name}-")
    return DeviceNetwork(
        d.addresses,
        PLAN,
        nets,
        NftApplier(host_argv=d.argv),
        overlay=d.nebula,
        host_argv=d.argv,
        netns=d.ns,
    )


async def test_device_network_end_to_end(lab: NetLab, tmp_path: Path) -> None:
    site = www(tmp_path)
    await lab.nebula_everywhere("lh")
    lh, d1, d2 = lab.devices["lh"], lab.devices["d1"], lab.devices["d2"]
    dn1, dn2 = device_network(lab, d1), device_network(lab, d2)
    async with asyncio.TaskGroup() as tg:
        assert lh.nebula is not None
        tasks = [tg.create_task(lh.nebula.run()), tg.create_task(dn1.run())]
        tasks.append(tg.create_task(dn2.run()))
        await asyncio.wait_for(asyncio.gather(dn1.ready.wait(), dn2.ready.wait()), 30)

        _, web, _ = await dn2.attach("web", "shop")
        _, client, resolv = await dn1.attach("client", "shop")
        assert resolv.startswith("nameserver 10.42.1.1\nsearch shop.cloudless cloudless")
        web_ns, client_ns = dn2.containers.name("web"), dn1.containers.name("client")
        lab.nss.popen(web_ns, ["busybox", "httpd", "-f", "-p", "80", "-h", str(site)])

        spec = ServiceSpec(ServiceKey("shop", "web"), (ServicePort(80),))
        ep = Endpoint(ipaddress.IPv4Address(web.ip), "web-0", "d2")
        services = [Service(spec, ipaddress.IPv4Address("10.43.0.7"), (ep,))]
        for dn in (dn1, dn2):
            assert await dn.update_services(services) is True

        def fetch(url: str) -> str:
            return lab.sh(client_ns, f"timeout 3 busybox wget -qO- {url}", check=False)

        # the short name, answered from the asker's namespace ("shop") by d1's responder
        out = await asyncio.to_thread(lab.sh, client_ns, "busybox nslookup web 10.42.1.1")
        assert "10.43.0.7" in out
        for _ in range(50):  # the tunnel to d2 comes up on first use
            got = await asyncio.to_thread(fetch, "http://10.43.0.7/cgi-bin/ip")
            if got:
                break
            await asyncio.sleep(0.2)
        assert remote_addr(got) == client.ip

        # no endpoints left: the VIP refuses at once instead of timing out
        await dn1.update_services([replace(services[0], endpoints=())])
        t0 = time.monotonic()
        assert await asyncio.to_thread(fetch, "http://10.43.0.7/") == ""
        assert time.monotonic() - t0 < 2.0

        await dn1.detach("client")
        assert await dn1.collect(set()) == []
        assert await dn2.collect(set()) == ["web"]  # the agent no longer runs it
        for t in tasks:
            t.cancel()
