"""The supervisor's networking seam (``agent.network.ContainerNetworking``): ``FakeNetworking``
and the real ``AgentNetwork`` (a device network in a namespace, brought up from a
``NetworkConfig`` without lighthouses, so without Nebula) pass one suite.

Slot 3 of the default plan: containers 10.42.3.0/24, gateway (and DNS) 10.42.3.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudless.agent.network import AgentNetwork, ContainerNetworking, FakeNetworking
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.testing import Namespaces, run, sweep_dead_runs, unavailable_reason
from cloudless.network.wire import network_config
from tests.contract.network.test_cni_contract import HAVE_CNI

SUBNET = "10.42.3.0/24"


@pytest.fixture(params=["fake", "real"])
async def networking(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ContainerNetworking]:
    if request.param == "fake":
        yield FakeNetworking(subnet=SUBNET)
        return
    reason = unavailable_reason() or (None if HAVE_CNI else "CNI plugins are not installed")
    if reason:
        pytest.skip(reason)
    sweep_dead_runs("cl14-")
    nss = Namespaces("k", base="cl14-")
    dev = nss.create("dev")
    net = AgentNetwork(
        tmp_path, "dev", host_netns=dev, netns_prefix=f"{nss.prefix}-c-", attach_timeout=30
    )
    task = asyncio.create_task(net.run())
    try:
        await net.bring_up(network_config(AddressPlanConfig(), 3, [], nebula=None, lighthouses={}))
        assert net.state == "up", net.reason
        yield net
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        nss.close()


async def test_attach_is_idempotent_and_gives_an_address_in_the_subnet(
    networking: ContainerNetworking,
) -> None:
    a = await networking.attach("web-0")
    assert a is not None
    assert a.ip.startswith("10.42.3.") and a.ip != "10.42.3.1"  # never the gateway
    assert await networking.attach("web-0") == a  # an adopted container gets it back
    b = await networking.attach("web-1")
    assert b is not None and b.ip != a.ip


async def test_detach_frees_and_unknown_detach_is_a_no_op(
    networking: ContainerNetworking,
) -> None:
    a = await networking.attach("web-0")
    assert a is not None
    await networking.detach("web-0")
    await networking.detach("web-0")
    await networking.detach("never-attached")
    if isinstance(networking, AgentNetwork):
        names = await asyncio.to_thread(run, ["ip", "netns", "list"])
        assert Path(a.netns).name not in names
        assert not await asyncio.to_thread(Path(a.resolv_conf).exists)


async def test_resolver_points_at_the_device(networking: ContainerNetworking) -> None:
    a = await networking.attach("web-0")
    assert a is not None
    if isinstance(networking, AgentNetwork):
        text = await asyncio.to_thread(Path(a.resolv_conf).read_text)
        assert text.startswith("nameserver 10.42.3.1\nsearch default.cloudless cloudless")
        assert await asyncio.to_thread(Path(a.netns).exists)
    else:
        assert a.resolv_conf.endswith("web-0.conf")
