"""The supervisor with container networking (the ``FakeNetworking`` seam), on the fake runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from cloudless.agent.network import FakeNetworking
from cloudless.agent.supervisor import NET_LABEL, Assigned, Supervisor
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import ReplicaState
from cloudless.model.workload import PublishedPort, RestartPolicy, WorkloadSpec
from cloudless.network.cni import PortMapping
from cloudless.runtime.fake import FakeBehavior, FakeRuntime
from cloudless.runtime.types import BindMount
from tests.unit.agent.test_supervisor import settle


def web(rid: str, version: int = 1) -> Assigned:
    spec = WorkloadSpec(
        name="web", image="img", ports=(8080, 9090), stop_timeout_s=5,
        restart=RestartPolicy(backoff_base_s=1.0),
    )  # fmt: skip
    return Assigned(rid, "web", version, spec)


@contextlib.asynccontextmanager
async def running(
    rt: FakeRuntime, clock: FakeClock, net: FakeNetworking
) -> AsyncIterator[Supervisor]:
    sup = Supervisor(rt, clock, lambda: None, network=net)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(rt.run()), tg.create_task(sup.run([]))]
        await settle(clock)
        try:
            yield sup
        finally:
            for t in tasks:
                t.cancel()


async def test_replica_gets_its_own_namespace_address_and_resolver() -> None:
    clock = FakeClock()
    rt, net = FakeRuntime(clock), FakeNetworking(subnet="10.42.1.0/24")
    async with running(rt, clock, net) as sup:
        sup.assign([web("web-0")])
        await settle(clock)
        spec = rt.host.containers["web-0"].spec
        # first address handed out: 10.42.1.0 + 2 (the gateway is .1)
        assert spec.netns == "/fake/netns/web-0"
        assert BindMount("/fake/resolv/web-0.conf", "/etc/resolv.conf", True) in spec.mounts
        assert spec.env["PORT"] == "8080"  # the declared port, not a host port
        assert spec.labels[NET_LABEL] == "10.42.1.2"
        assert sup.workers["web-0"].status.endpoint == "10.42.1.2:8080"
        assert sup.ports.taken == set()  # no host port reserved

        sup.assign([])
        await settle(clock, 6)
        await sup.idle()
        assert net.detached == ["web-0"] and net.attached == {}


async def test_a_restarted_container_keeps_its_address() -> None:
    clock = FakeClock()
    rt = FakeRuntime(clock, default=FakeBehavior(run_for=1.0, exit_code=1))
    net = FakeNetworking()
    async with running(rt, clock, net) as sup:
        sup.assign([web("web-0")])
        await settle(clock, 2.5)  # exits at t=1, restarted after 1 s backoff
        assert sup.workers["web-0"].status.restarts >= 1
        assert list(net.attached) == ["web-0"] and net.detached == []
        assert sup.workers["web-0"].status.endpoint == "10.42.1.2:8080"


async def test_network_down_fails_the_replica_with_the_reason() -> None:
    clock = FakeClock()
    rt, net = FakeRuntime(clock), FakeNetworking(down="nebula did not come up")
    async with running(rt, clock, net) as sup:
        sup.assign([web("web-0")])
        await settle(clock)
        st = sup.workers["web-0"].status
        assert st.state is ReplicaState.FAILED
        assert "device network is not up: nebula did not come up" in st.reason
        assert "web-0" not in rt.host.containers  # never started on the device's network


async def test_networking_off_keeps_host_ports() -> None:
    clock = FakeClock()
    rt, net = FakeRuntime(clock), FakeNetworking(off=True)
    async with running(rt, clock, net) as sup:
        sup.assign([web("web-0")])
        await settle(clock)
        spec = rt.host.containers["web-0"].spec
        assert spec.netns == "" and NET_LABEL not in spec.labels
        port = int(spec.env["PORT"])
        assert port != 8080 and port in sup.ports.taken
        assert sup.workers["web-0"].status.endpoint == f"127.0.0.1:{port}"


async def test_a_start_that_fails_attaches_afresh_on_the_next_attempt() -> None:
    """A start failure (e.g. runc: the namespace path is gone) detaches the replica, so the
    retry gets a new namespace instead of failing on the same one for ever."""
    clock = FakeClock()
    rt = FakeRuntime(clock)
    net = FakeNetworking()
    async with running(rt, clock, net) as sup:
        rt.by_container["web-0"] = FakeBehavior(start_error="namespace path: no such file")
        sup.assign([web("web-0")])
        await settle(clock)
        st = sup.workers["web-0"].status
        assert st.state is ReplicaState.FAILED
        assert net.detached == ["web-0"] and net.attached == {}
        rt.by_container["web-0"] = FakeBehavior()
        await settle(clock, 3)  # the restart backoff
        assert sup.workers["web-0"].status.state.value == "running"
        assert list(net.attached) == ["web-0"]
        assert rt.host.containers["web-0"].spec.netns == "/fake/netns/web-0"


async def test_published_ports_reach_the_container_network_as_port_mappings() -> None:
    clock = FakeClock()
    rt, net = FakeRuntime(clock), FakeNetworking()
    a = web("web-0")
    spec = replace(a.spec, published=(PublishedPort(8080, 18080),))
    async with running(rt, clock, net) as sup:
        sup.assign([replace(a, spec=spec), web("plain-0")])
        await settle(clock)
        # 18080 on the device -> 8080 in web-0; 9090 and plain-0's ports stay unpublished
        assert net.published == {
            "web-0": (PortMapping(18080, 8080),),
            "plain-0": (),
        }


@pytest.mark.parametrize(
    ("ports", "endpoint"),
    [
        ((8080, 9090), "10.42.1.2:8080"),  # the first declared port
        ((), "10.42.1.2:0"),  # no port: the address alone, which network policies match by
    ],
)
async def test_a_restarted_agent_reports_the_adopted_replicas_endpoint(
    ports: tuple[int, ...], endpoint: str
) -> None:
    """An agent that restarts adopts its running containers; each still reports its address.
    (A port-less replica reported none after adoption, so the policy tables dropped it from
    its namespace's sources and its traffic was denied as coming from another namespace.)"""
    clock = FakeClock()
    rt, net = FakeRuntime(clock), FakeNetworking()
    a = web("web-0")
    a = replace(a, spec=replace(a.spec, ports=ports))
    async with running(rt, clock, net) as sup:
        sup.assign([a])
        await settle(clock)
        assert sup.workers["web-0"].status.endpoint == endpoint
    pid = rt.host.containers["web-0"].pid
    rt2 = FakeRuntime(clock, host=rt.host)
    sup2 = Supervisor(rt2, clock, lambda: None, network=net)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(rt2.run()), tg.create_task(sup2.run([a]))]
        await settle(clock)
        assert rt2.host.containers["web-0"].pid == pid  # adopted, not started again
        assert sup2.workers["web-0"].status.endpoint == endpoint
        for t in tasks:
            t.cancel()
