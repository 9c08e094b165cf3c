"""Devices behind NAT routers: a port-preserving MASQUERADE and a symmetric one
(``MASQUERADE --random-fully``). Nebula crosses them by hole punching or through the
lighthouse as relay.

Worked addresses: public switch 192.168.77.0/24 (lh .1 slot 0, d1 .11 slot 1, routers .253 and
.254); behind "nata": 192.168.88.0/24 (d3 .10, slot 3: containers 10.42.3.0/24); behind the
symmetric "nats": 192.168.99.0/24 (d4 .10, slot 4: containers 10.42.4.0/24).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.network.device import ServicesProgrammer
from cloudless.network.lab import NetLab
from cloudless.network.nft import NftContext
from cloudless.network.nft_apply import NftApplier
from cloudless.network.testing import run
from tests.integration.network.test_overlay_services import (
    PLAN,
    eventually,
    program,
    remote_addr,
    service,
    www,
)

pytestmark = pytest.mark.netns


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("n", tmp_path, PLAN)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.switch("pa", "192.168.88.0/24")
        lab.switch("ps", "192.168.99.0/24")
        lab.router("nata", "pub", "192.168.77.253/24", "pa", "192.168.88.1/24", symmetric=False)
        lab.router("nats", "pub", "192.168.77.254/24", "ps", "192.168.99.1/24", symmetric=True)
        lab.device("lh", 0, "pub", "192.168.77.1/24")
        lab.device("d1", 1, "pub", "192.168.77.11/24")
        lab.device("d3", 3, "pa", "192.168.88.10/24", gateway="192.168.88.1")
        lab.device("d4", 4, "ps", "192.168.99.10/24", gateway="192.168.99.1")
        yield lab
    finally:
        lab.close()


async def test_service_behind_symmetric_nat(lab: NetLab, tmp_path: Path) -> None:
    d1, d3, d4 = lab.devices["d1"], lab.devices["d3"], lab.devices["d4"]
    site = www(tmp_path)
    back = await lab.container(d4, "back")  # the only replica, behind the symmetric NAT
    client = await lab.container(d1, "client")  # on a public device
    natted = await lab.container(d3, "natted")  # behind the other NAT
    httpd = lab.nss.popen(
        lab.container_ns(d4, "back"), ["busybox", "httpd", "-f", "-p", "80", "-h", str(site)]
    )
    # the NATed devices really are behind their routers: no route to them from outside
    assert " 0% packet loss" not in lab.sh(d1.ns, "busybox ping -c1 -W1 192.168.99.10", check=False)

    await lab.nebula_everywhere("lh")
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.nebula.run()) for d in lab.devices.values() if d.nebula]
        for d in lab.devices.values():
            assert d.nebula is not None
            await d.nebula.wait_active(15)
        # d1 through the agent-side programmer (rules + conntrack + DNS), d3 directly
        ctx = NftContext(d1.addresses.container_subnet, PLAN.containers, PLAN.cluster_ranges())
        prog = ServicesProgrammer(ctx, NftApplier(host_argv=d1.argv))
        await program(d1, [])  # the service-range route
        await prog.apply([service("back", "10.43.0.5", (back.ip, "back-0"))])
        await program(d3, [service("back", "10.43.0.5", (back.ip, "back-0"))])

        cns = lab.container_ns(d1, "client")
        took = await eventually(
            "public client reaches the VIP of a replica behind the symmetric NAT",
            lambda: (
                remote_addr(
                    lab.sh(
                        cns, "timeout 2 busybox wget -qO- http://10.43.0.5/cgi-bin/ip", check=False
                    )
                )
                == client.ip
            ),
            timeout=30,
        )
        print(f"public -> symmetric NAT: first answer after {took:.2f}s")

        nns = lab.container_ns(d3, "natted")
        took = await eventually(
            "client behind one NAT reaches the replica behind the symmetric NAT",
            lambda: (
                remote_addr(
                    lab.sh(
                        nns, "timeout 2 busybox wget -qO- http://10.43.0.5/cgi-bin/ip", check=False
                    )
                )
                == natted.ip
            ),
            timeout=30,
        )
        print(f"NAT -> symmetric NAT: first answer after {took:.2f}s")
        # cone NAT <-> symmetric NAT cannot punch through: the lighthouse relays
        logs = [ln for d in (d3, d4) if d.nebula for ln in d.nebula.log]
        assert any("via relay" in ln for ln in logs), "\n".join(logs[-20:])

        # the replica moves (killed behind the symmetric NAT, replaced behind the other NAT):
        # same VIP, new endpoint, every device reprogrammed
        httpd.kill()  # only the process this test started
        httpd.wait()
        back1 = await lab.container(d3, "back1")
        lab.nss.popen(
            lab.container_ns(d3, "back1"), ["busybox", "httpd", "-f", "-p", "80", "-h", str(site)]
        )

        def flows_to(ip: str) -> str:
            return run([*d1.argv, "conntrack", "-L", "--reply-src", ip], check=False)

        assert back.ip in flows_to(back.ip)  # the client's connections through the VIP
        await prog.apply([service("back", "10.43.0.5", (back1.ip, "back-1"))])
        assert back.ip not in flows_to(back.ip)  # the gone endpoint's entries were deleted
        await program(d3, [service("back", "10.43.0.5", (back1.ip, "back-1"))])
        took = await eventually(
            "the VIP keeps working once the replacement is ready",
            lambda: (
                remote_addr(
                    lab.sh(
                        cns, "timeout 2 busybox wget -qO- http://10.43.0.5/cgi-bin/ip", check=False
                    )
                )
                == client.ip
            ),
            timeout=20,
        )
        print(f"replica moved: VIP answering again after {took:.2f}s")
        for t in tasks:
            t.cancel()
