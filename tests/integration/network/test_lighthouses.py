"""Two coordinators' lighthouses (the real ``Lighthouse``, each in its own namespace, sharing
one store) and two devices behind NAT routers: both lighthouses register, devices list both
as lighthouses and relays, the cone-NATed device reaches the one behind the symmetric NAT
through a relay, and with two lighthouses watching, the symmetric NAT is told apart from the
cone one without any peer traffic.

Worked addresses (namespaces ``cl14n<pid>l-...``): public switch 192.168.77.0/24 (lighthouses
c1 .1 and c2 .2, routers .253 and .254); behind the port-preserving "nata" 192.168.88.0/24
(d3 .10, slot 3); behind the symmetric "nats" 192.168.99.0/24 (d4 .10, slot 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.lib.clock import SystemClock
from cloudless.network.lab import Device, NetLab
from cloudless.network.lighthouse import Lighthouse
from cloudless.network.nebula import NebulaCA, NebulaSupervisor
from cloudless.network.nebula_admin import AdminKeys, NebulaAdmin, hostmap
from cloudless.network.nebula_config import NebulaSettings, groups_from_labels, render_config
from cloudless.network.observer import LIGHTHOUSES, fresh_views, registered_lighthouses
from cloudless.network.overlay_state import classify
from cloudless.store.memory import MemoryStore
from tests.integration.network.test_overlay_services import PLAN, eventually

pytestmark = pytest.mark.netns


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("l", tmp_path, PLAN, base="cl14n")
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.switch("pa", "192.168.88.0/24")
        lab.switch("ps", "192.168.99.0/24")
        lab.router("nata", "pub", "192.168.77.253/24", "pa", "192.168.88.1/24", symmetric=False)
        lab.router("nats", "pub", "192.168.77.254/24", "ps", "192.168.99.1/24", symmetric=True)
        lab.device("c1", 0, "pub", "192.168.77.1/24")  # coordinators' hosts (slots unused)
        lab.device("c2", 1, "pub", "192.168.77.2/24")
        lab.device("d3", 3, "pa", "192.168.88.10/24", gateway="192.168.88.1")
        lab.device("d4", 4, "ps", "192.168.99.10/24", gateway="192.168.99.1")
        yield lab
    finally:
        lab.close()


async def device_nebula(
    lab: NetLab, ca: NebulaCA, d: Device, lighthouses: dict[str, tuple[str, ...]]
) -> None:
    crt, key = await ca.issue(d.name, d.addresses, groups_from_labels({}), lab.dir / d.name)
    keys = AdminKeys(lab.dir / d.name / "admin")
    d.admin = NebulaAdmin(keys, 4242, host_argv=d.argv)
    d.nebula = NebulaSupervisor(lab.dir / d.name / "run", host_argv=d.argv)
    await d.nebula.apply(
        render_config(
            NebulaSettings(
                name=d.name,
                addresses=d.addresses,
                plan=PLAN,
                ca_path=str(ca.crt),
                cert_path=str(crt),
                key_path=str(key),
                lighthouses=lighthouses,
                behind_nat=True,
                relays=tuple(sorted(lighthouses)),
                admin=keys.ensure(4242),
            )
        )
    )


async def test_two_lighthouses_relay_and_tell_nat_types_apart(lab: NetLab) -> None:
    store = MemoryStore(SystemClock())
    ca = NebulaCA(lab.dir / "ca" / "nebula")
    c1, c2, d3, d4 = (lab.devices[n] for n in ("c1", "c2", "d3", "d4"))
    lhs = [
        Lighthouse(
            ca,
            PLAN,
            f"{c.ip}:4242",
            lab.dir / c.name,
            host_argv=c.argv,
            store=store,
            clock=SystemClock(),
            coordinator=c.name,
        )
        for c in (c1, c2)
    ]
    async with asyncio.TaskGroup() as tg:
        lh_tasks = [tg.create_task(lh.run()) for lh in lhs]
        for _ in range(300):  # each claims its address before starting nebula
            registered = await registered_lighthouses(store)
            if len(registered) == 2:
                break
            await asyncio.sleep(0.1)
        assert registered == {
            str(PLAN.lighthouse_ips()[0]): ("192.168.77.1:4242",),
            str(PLAN.lighthouse_ips()[1]): ("192.168.77.2:4242",),
        }
        for lh in lhs:
            await lh.nebula.wait_active(15)
        for d in (d3, d4):
            await device_nebula(lab, ca, d, registered)
        dev_tasks = [tg.create_task(d.nebula.run()) for d in (d3, d4) if d.nebula]
        for d in (d3, d4):
            assert d.nebula is not None
            await d.nebula.wait_active(15)

        def pings() -> bool:
            out = lab.sh(d3.ns, f"busybox ping -c1 -W1 {d4.addresses.overlay_ip}", check=False)
            return " 0% packet loss" in out

        took = await eventually("cone-NATed d3 reaches symmetric-NATed d4", pings, timeout=40)
        print(f"d3 -> d4 first reply after {took:.2f}s")
        assert d3.admin is not None
        tunnels = {t.peer: t for t in await hostmap(d3.admin)}
        for ip in registered:
            assert tunnels[ip].direct, f"d3 has a direct tunnel to lighthouse {ip}"
        to_d4 = tunnels[str(d4.addresses.overlay_ip)]
        assert not to_d4.direct and set(to_d4.relays) <= set(registered), to_d4

        async def views_of_both() -> bool:
            await asyncio.gather(*(lh.watch.once() for lh in lhs if lh.watch))
            vs = [r.value for r in (await LIGHTHOUSES.bind(store).list()).records]
            return sum(1 for v in vs if len(v.seen) >= 2) == 2

        for _ in range(100):
            if await views_of_both():
                break
            await asyncio.sleep(0.2)
        views = fresh_views(
            [r.value for r in (await LIGHTHOUSES.bind(store).list()).records],
            SystemClock().now(),
        )
        assert {v.coordinator for v in views} == {"c1", "c2"}
        o3 = classify(str(d3.addresses.overlay_ip), views, {}, registered)
        o4 = classify(str(d4.addresses.overlay_ip), views, {}, registered)
        print(f"d3: {o3.nat} ({o3.nat_reason})\nd4: {o4.nat} ({o4.nat_reason})")
        assert o3.nat == "cone"  # both lighthouses see 192.168.77.253:4242
        assert o4.nat == "symmetric"  # each lighthouse sees another port of .254
        assert o3.reachable is True and o4.reachable is True
        for t in (*dev_tasks, *lh_tasks):
            t.cancel()
