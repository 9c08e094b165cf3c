"""An agent that restarts brings its device's bridge up again over the one it left behind
(same gateway address, same service route), whatever iproute2 says about the address."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudless.network.bringup import BRIDGE, DeviceNetwork
from cloudless.network.cni import CniInvoker, bridge_conflist
from cloudless.network.device import ContainerNetworks, IpNetns
from cloudless.network.nft_apply import NftApplier
from cloudless.network.testing import Namespaces
from tests.integration.network.test_overlay_services import PLAN

pytestmark = pytest.mark.netns


async def test_bridge_up_twice(tmp_path: Path) -> None:
    nss = Namespaces(base="clwd")
    try:
        ns = nss.create("dev")
        argv = ["ip", "netns", "exec", ns]
        addresses = PLAN.addresses(1)

        def network() -> DeviceNetwork:
            conf = bridge_conflist(addresses, data_dir=str(tmp_path / "ipam"))
            cni = CniInvoker(conf, str(tmp_path / "cni"), host_argv=argv)
            nets = ContainerNetworks(cni, IpNetns(), prefix=f"{ns}-c-")
            return DeviceNetwork(
                addresses, PLAN, nets, NftApplier(host_argv=argv), host_argv=argv, netns=ns
            )

        await network()._bridge()
        await network()._bridge()  # the restarted agent's
        shown = nss.sh(ns, f"ip -4 addr show dev {BRIDGE}")
        assert shown.count(f"inet {addresses.gateway}/") == 1, shown
        route = nss.sh(ns, f"ip route show {PLAN.services}")
        assert f"src {addresses.gateway}" in route, route
    finally:
        nss.close()
