"""The overlay as Nebula itself reports it, in a namespace lab (real nebula, its ssh admin
interface, NAT routers): NAT types, direct and relayed paths, and a device no relay reaches.

Worked addresses (namespaces ``cl14n<pid>-...``): public switch 192.168.77.0/24 (lh .1 slot 0,
d1 .11 slot 1, d5 .15 slot 5, routers .253 and .254); behind the port-preserving "nata":
192.168.88.0/24 (d3 .10, slot 3); behind the symmetric "nats" (``MASQUERADE --random-fully``):
192.168.99.0/24 (d4 .10, slot 4). d5 is public but drops all UDP (a firewall): Nebula gets
through to nobody, not even the relay. The same NAT types told apart by two lighthouses:
``test_lighthouses.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.lib.clock import FakeClock
from cloudless.network.lab import Device, NetLab
from cloudless.network.observer import read_view
from cloudless.network.overlay_state import OverlayReport, classify
from cloudless.network.probe import OverlayProbe
from tests.integration.network.test_overlay_services import PLAN, eventually

pytestmark = pytest.mark.netns


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("o", tmp_path, PLAN, base="cl14n")
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
        d5 = lab.device("d5", 5, "pub", "192.168.77.15/24")
        for chain in ("INPUT", "OUTPUT"):
            lab.sh(d5.ns, f"iptables -A {chain} -p udp -j DROP")
        yield lab
    finally:
        lab.close()


def ip(d: Device) -> str:
    return str(d.addresses.overlay_ip)


def pings(lab: NetLab, src: Device, dst: Device) -> bool:
    out = lab.sh(src.ns, f"busybox ping -c1 -W1 {ip(dst)}", check=False)
    return " 0% packet loss" in out


async def test_nat_types_paths_and_an_unreachable_device(lab: NetLab) -> None:
    lh, d1, d3, d4, d5 = (lab.devices[n] for n in ("lh", "d1", "d3", "d4", "d5"))
    await lab.nebula_everywhere("lh", admin=True)
    clock = FakeClock()  # the probes' "how long without a lighthouse" runs on it
    probes = {
        ip(d): OverlayProbe(d.admin, lambda: [ip(lh)], clock)  # type: ignore[arg-type]
        for d in (d1, d3, d4, d5)
    }
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(d.nebula.run()) for d in lab.devices.values() if d.nebula]
        for d in (lh, d1, d3, d4, d5):
            assert d.nebula is not None
            await d.nebula.wait_active(15)
        for _ in range(2):  # the first look starts d5's count; 31 s later, past the grace
            for p in probes.values():
                await p.once()
            clock.advance(31)
        # traffic makes tunnels: public -> cone, public -> symmetric, cone -> symmetric
        for src, dst in ((d1, d3), (d1, d4), (d3, d4)):
            await eventually(f"{src.name} pings {dst.name}", lambda s=src, t=dst: pings(lab, s, t))

        async def looked() -> dict[str, OverlayReport]:
            return {k: await p.once() for k, p in probes.items()}

        reports = await looked()
        t0 = time.monotonic()
        for _ in range(5):
            await probes[ip(d1)].once()
        print(
            f"one look at a device's hostmap (ssh + list-hostmap): "
            f"{(time.monotonic() - t0) / 5 * 1000:.1f} ms"
        )
        assert lh.admin is not None
        view = await read_view(lh.admin, ip(lh), clock.now())
        assert not view.error, view.error
        got = {d.name: classify(ip(d), [view], reports, [ip(lh)]) for d in (d1, d3, d4, d5)}
        for name, o in got.items():
            print(
                f"{name}: nat={o.nat} ({o.nat_reason}); reachable={o.reachable} "
                f"({o.reach_reason}); {o.summary({ip(d): d.name for d in lab.devices.values()})}"
            )

        assert got["d1"].nat == "none"
        # With one lighthouse and Nebula 1.6.1, the tunnels between devices here all start
        # relayed (the relay's handshake wins the race with hole punching, and 1.6 never moves
        # a relayed tunnel to a direct path): the lighthouse is the only observer, so the NAT
        # is seen but its mapping type is not known. The symmetric NAT shows in the mapping
        # the lighthouse sees: a random port, where the port-preserving NAT keeps 4242.
        assert got["d3"].nat in ("nat", "cone") and "192.168.77.253:4242" in got["d3"].nat_reason
        assert got["d4"].nat in ("nat", "symmetric")
        seen = view.seen_map()
        assert seen[ip(d3)] == "192.168.77.253:4242"
        assert seen[ip(d4)].startswith("192.168.77.254:") and not seen[ip(d4)].endswith(":4242")
        assert got["d4"].reachable is True and got["d3"].reachable is True
        paths = {p.peer: p for p in got["d3"].paths}
        assert paths[ip(d4)].direct is False and paths[ip(d4)].via == ip(lh)  # relayed
        assert paths[ip(lh)].direct is True
        # d5: no tunnel to the lighthouse for 31+ s and the lighthouse never saw it
        assert got["d5"].reachable is False, got["d5"].reach_reason
        assert "no tunnel to any lighthouse" in got["d5"].reach_reason
        assert got["d5"].nat == "unknown"
        for t in tasks:
            t.cancel()
