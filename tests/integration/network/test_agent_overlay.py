"""The agent's overlay end to end in a namespace lab, with the product's pieces: the real
``Lighthouse`` (registered in the store, admin interface on), the ``NetworkPublisher`` signing
each node's *own* public key, two ``AgentNetwork``s (one public, one behind a NAT router),
their ``OverlayProbe`` reports and the leader's ``OverlayObserver``; then the certificates
come due and are re-issued, and each agent restarts Nebula and traffic flows again.

Addresses: public switch 192.168.77.0/24 (lighthouse host .1, d1 .11, the router's outside
.2); home switch 192.168.88.0/24 behind the router (d2 .11). Slots: d1 0 (overlay 100.64.0.1),
d2 1 (100.64.0.2); the lighthouse claims 100.64.0.254 (the top of the /24 overlay).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.agent.network import AgentNetwork
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.lib.clock import FakeClock, SystemClock
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.lab import NetLab
from cloudless.network.lighthouse import Lighthouse
from cloudless.network.nebula import NebulaCA
from cloudless.network.observer import OverlayObserver, overlay_records
from cloudless.network.overlay_state import OverlayReport, report_from_pb
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device
from cloudless.network.wire import DeviceConfig
from cloudless.scheduler.testing import node
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore
from tests.integration.network.test_overlay_services import eventually

pytestmark = pytest.mark.netns

CFG = AddressPlanConfig(overlay_cidr="100.64.0.0/24", container_cidr="10.42.0.0/20")
PLAN = CFG.plan()
LH_ADDR = "192.168.77.1:4242"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    lab = NetLab("a", tmp_path, PLAN, base="cl14n")
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.switch("home", "192.168.88.0/24")
        lab.device("lh", 5, "pub", "192.168.77.1/24")  # its slot is unused: the lighthouse
        lab.device("d1", 0, "pub", "192.168.77.11/24")
        lab.router("nat", "pub", "192.168.77.2/24", "home", "192.168.88.1/24", symmetric=False)
        lab.device("d2", 1, "home", "192.168.88.11/24", gateway="192.168.88.1")
        yield lab
    finally:
        lab.close()


async def test_own_keys_observed_overlay_and_renewal(lab: NetLab, tmp_path: Path) -> None:
    store = MemoryStore(SystemClock())
    state = ClusterState(store)
    pub_clock = FakeClock(start=time.time())  # the publisher's: certificates come due on it
    ca = NebulaCA(tmp_path / "ca" / "nebula")
    lighthouse = Lighthouse(
        ca,
        PLAN,
        LH_ADDR,
        tmp_path / "lh",
        host_argv=lab.devices["lh"].argv,
        store=store,
        clock=SystemClock(),
        coordinator="c1",
    )
    nets = {
        name: AgentNetwork(
            tmp_path / name,
            name,
            public=name == "d1",
            host_netns=lab.devices[name].ns,
            netns_prefix=f"{lab.nss.prefix}-{name}-c-",
            attach_timeout=60,
        )
        for name in ("d1", "d2")
    }
    for name, net in nets.items():  # what enrollment stores: the node's own public key
        await state.nodes.put(name, node(name, nebula_public_key=net.nebula_public_key()))

    def repush(nodes: object) -> None:  # what the hub does: send each node its message
        assert isinstance(nodes, list)
        for n in nodes:
            nets[n].update(pub.config_for(n))

    pub = NetworkPublisher(store, CFG, pub_clock, repush, ca=ca, cert_hours=1)
    await assign_device(store, PLAN, "d1")
    await assign_device(store, PLAN, "d2")
    d1, d2 = lab.devices["d1"], lab.devices["d2"]

    def pings() -> bool:
        out = lab.sh(d1.ns, f"busybox ping -c1 -W1 {d2.addresses.overlay_ip}", check=False)
        return " 0% packet loss" in out

    async with asyncio.TaskGroup() as tg:
        lh_task = tg.create_task(lighthouse.run())
        for _ in range(100):  # the lighthouse claims its address, then the publisher sees it
            if lighthouse.watch is not None:
                break
            await asyncio.sleep(0.1)
        assert str(lighthouse.overlay_ip) == "100.64.0.254"
        tasks = [tg.create_task(net.run()) for net in nets.values()]
        assert await pub.refresh() == ["d1", "d2"]
        issued = time.time()
        for name in ("d1", "d2"):
            msg = pub.config_for(name)
            assert msg.nebula_cert and not msg.nebula_key  # the key never travels
            assert DeviceConfig.from_pb(msg).lighthouses == {"100.64.0.254": (LH_ADDR,)}
        for net in nets.values():
            for _ in range(600):
                if net.state == "up":
                    break
                await asyncio.sleep(0.1)
            assert net.state == "up", net.reason
            key = (tmp_path / net.node_name / "network" / "nebula" / "host.key").exists()
            assert not key  # Nebula runs on node.key, made on the node

        took = await eventually("d1 reaches d2 over the overlay", pings, timeout=30)
        print(f"first overlay reply after {took:.2f}s")

        # the overlay as the agents and the lighthouse see it
        reports: dict[str, OverlayReport] = {}
        for name, net in nets.items():
            assert net.probe is not None
            await net.probe.once()
            got = net.overlay_report()
            assert got is not None
            reports[name] = report_from_pb(got)
        assert lighthouse.watch is not None
        await lighthouse.watch.once()
        await OverlayObserver(store, PLAN, SystemClock(), lambda: reports).once(NO_FENCE)
        recs = await overlay_records(store)
        for name, rec in recs.items():
            print(f"{name}: nat={rec.nat} ({rec.nat_reason}); reachable={rec.reachable}")
        assert recs["d1"].nat == "none" and recs["d1"].reachable is True
        assert recs["d2"].nat in ("cone", "nat") and recs["d2"].reachable is True
        # it advertised its LAN address only, not its container bridge (10.42.1.1)
        assert "its own addresses: 192.168.88.11)" in recs["d2"].nat_reason
        assert any(p.direct and p.peer == "100.64.0.254" for p in recs["d2"].paths)

        # 2/3 of the certificates' hour later: both re-issued, each agent restarts Nebula
        overlay = nets["d2"].device.overlay  # type: ignore[union-attr]
        assert overlay is not None
        pid = overlay.pid
        cert = pub.config_for("d2").nebula_cert
        # nebula-cert stamps certificates with its wall clock in whole seconds: a renewal in
        # the same second as the first issue would be the same certificate
        await asyncio.sleep(max(0.0, issued + 1.1 - time.time()))
        pub_clock.advance(2400)
        assert await pub.refresh() == ["d1", "d2"]
        assert pub.config_for("d2").nebula_cert != cert
        t0 = time.monotonic()
        for _ in range(100):
            if overlay.pid not in (None, pid):
                break
            await asyncio.sleep(0.1)
        assert overlay.pid not in (None, pid), "nebula restarted for the new certificate"
        took = await eventually("traffic again after the renewal", pings, timeout=30)
        print(f"renewal: nebula restarted, traffic again {time.monotonic() - t0:.2f}s later")
        for t in (*tasks, lh_task):
            t.cancel()
