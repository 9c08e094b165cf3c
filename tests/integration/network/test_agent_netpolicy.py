"""Network policy end to end: a stored policy, compiled by the leader's publisher, programmed
by the agent into the receiving device's kernel, with real containerd in a namespace lab.

Three hosts on one switch: ``lh`` runs the lighthouse, ``d1`` runs ``client-0`` (namespace
``default``, no ports: it reports "ip:0"), ``d2`` runs ``web-0`` (namespace ``shop``, busybox
httpd on port 80). The store holds what the coordinator holds: the slots, the workload
records and the replica records with the addresses the supervisors report. The client
fetches web-0's address through the overlay:

1. no policy: allowed (a namespace without a policy is open), d2 has no policy table;
2. ``shop-no-default`` (shop denies namespace default): refused, d2's table is programmed;
3. the policy replaced by one allowing ``app=client`` from default: allowed again;
4. the deny policy applied again, then deleted: refused, then allowed, d2's table removed.

Slots: d1 = 0 (10.42.0.0/24), d2 = 1 (10.42.1.0/24); lighthouse 100.64.0.254.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest

from cloudless.agent.network import AgentNetwork
from cloudless.agent.supervisor import Assigned, Supervisor
from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.devenv import (
    PrivateContainerd,
    PrivateRegistry,
    build_busybox_image,
    containerd_available,
    registry_available,
)
from cloudless.lib.clock import SystemClock
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.workload import WorkloadSpec
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.lab import NetLab
from cloudless.network.lighthouse import Lighthouse
from cloudless.network.nebula import NebulaCA
from cloudless.network.netpolicy import parse_policy, policy_to_dict
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device
from cloudless.network.testing import run, sweep_dead_runs
from cloudless.runtime.containerd import ContainerdRuntime
from cloudless.store.memory import MemoryStore
from cloudless.store.tables.replicas import replica_name
from tests.integration.network.test_overlay_services import remote_addr

pytestmark = [pytest.mark.netns, pytest.mark.integration]

BASE = "clnp-"
CFG = AddressPlanConfig(overlay_cidr="100.64.0.0/24", container_cidr="10.42.0.0/20")
PLAN = CFG.plan()
LH_ADDR = "192.168.77.1:4242"
WEB_CMD = (
    "busybox mkdir -p /w/cgi-bin && busybox printf '#!/bin/sh\\necho Content-type: text/plain"
    "\\necho\\necho $REMOTE_ADDR\\n' > /w/cgi-bin/ip && busybox chmod +x /w/cgi-bin/ip && "
    "exec httpd -f -p 80 -h /w"
)
DENY: dict[str, object] = {
    "name": "shop-ingress",
    "namespace": "shop",
    "ingress": [{"action": "deny", "from": [{"namespace": "default"}]}],
}
ALLOW: dict[str, object] = {
    "name": "shop-ingress",
    "namespace": "shop",
    "selector": {"app": "web"},
    "ingress": [
        {"from": [{"namespace": "default", "selector": {"app": "client"}}], "ports": [{"port": 80}]}
    ],
}


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[NetLab]:
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    sweep_dead_runs(BASE)
    lab = NetLab("a", tmp_path, PLAN, base=BASE)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.device("lh", 0, "pub", "192.168.77.1/24")  # its slot is unused: the lighthouse
        lab.device("d1", 0, "pub", "192.168.77.11/24")
        lab.device("d2", 1, "pub", "192.168.77.12/24")
        yield lab
    finally:
        lab.close()


def spec(name: str, ns: str, image: str, command: str, ports: tuple[int, ...]) -> WorkloadSpec:
    return WorkloadSpec(
        name=name,
        image=image,
        command=("sh", "-c", command),
        ports=ports,
        stop_timeout_s=1,
        namespace=ns,
        labels=MappingProxyType({"app": name}),
    )


async def wait_for(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_policy_denies_then_allows_a_container(lab: NetLab, tmp_path: Path) -> None:
    clock = SystemClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    ca = NebulaCA(tmp_path / "ca" / "nebula")
    lighthouse = Lighthouse(ca, PLAN, LH_ADDR, tmp_path / "lh", host_argv=lab.devices["lh"].argv)
    nets = {
        name: AgentNetwork(
            tmp_path / name,
            name,
            public=True,
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

    async with (
        PrivateRegistry(root_dir=tmp_path / "reg") as reg,
        PrivateContainerd(tmp_path / "ctrd") as cd,
    ):
        image = await build_busybox_image(reg, "busybox", "1")
        web = spec("web", "shop", image, WEB_CMD, (80,))
        client = spec("client", "default", image, "exec sleep 600", ())
        runtimes = {
            name: ContainerdRuntime(
                cd.address,
                data_dir=tmp_path / name / "rt",
                namespace=f"np-{name}-{secrets.token_hex(2)}",
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
                sups["d2"].assign([Assigned("web-0", "web", 1, web)])
                sups["d1"].assign([Assigned("client-0", "client", 1, client)])

                def status(sup: Supervisor, rid: str) -> ReplicaState:
                    w = sup.workers.get(rid)
                    return w.status.state if w else ReplicaState.PENDING

                async def both_running() -> bool:
                    return (
                        status(sups["d2"], "web-0") is ReplicaState.RUNNING
                        and status(sups["d1"], "client-0") is ReplicaState.RUNNING
                    )

                await wait_for(both_running, 60, "web-0 and client-0 running")
                web_ep = sups["d2"].workers["web-0"].status.endpoint
                client_ep = sups["d1"].workers["client-0"].status.endpoint
                web_ip, client_ip = web_ep.rsplit(":", 1)[0], client_ep.rsplit(":", 1)[0]
                assert web_ip.startswith("10.42.1.") and web_ep.endswith(":80")
                assert client_ip.startswith("10.42.0.") and client_ep.endswith(":0")
                # what the coordinator holds: the workloads and the replicas' reports
                for s, rid, node, ep in (
                    (web, "web-0", "d2", web_ep),
                    (client, "client-0", "d1", client_ep),
                ):
                    await state.workloads.put(s.name, WorkloadRecord(s))
                    r = Replica(rid, s.name, node, observed=ReplicaState.RUNNING, endpoint=ep)
                    await state.replicas.put(replica_name(s.name, rid), r)
                await pub.refresh()
                rt1 = runtimes["d1"]
                url = f"http://{web_ip}/cgi-bin/ip"

                async def fetch(tries: int) -> str:
                    for _ in range(tries):  # the tunnel comes up on first use
                        r = await rt1.exec_in_container(
                            "client-0",
                            ["busybox", "timeout", "3", "busybox", "wget", "-qO-", url],
                            5,
                        )
                        if r.exit_code == 0 and r.output.strip():
                            return r.output
                        await asyncio.sleep(0.5)
                    return ""

                async def d2_table() -> str:
                    return await asyncio.to_thread(
                        run,
                        [*lab.devices["d2"].argv, "nft", "list", "tables"],
                        check=False,
                    )

                async def policy(doc: dict[str, object] | None, programmed: bool) -> None:
                    if doc is None:
                        await state.netpolicies.delete("shop-ingress")
                    else:
                        await state.netpolicies.put(
                            "shop-ingress", policy_to_dict(parse_policy(doc))
                        )
                    assert await pub.refresh() == ["d2"]  # only web-0's device changes

                    async def applied() -> bool:
                        return ("cloudless_policy" in await d2_table()) == programmed

                    await wait_for(applied, 10, f"d2's policy table {programmed=}")

                # 1. no policy: shop is open
                assert remote_addr(await fetch(40)) == client_ip
                assert "cloudless_policy" not in await d2_table()
                # 2. shop denies default: the client is refused
                await policy(DENY, True)
                assert await fetch(3) == ""
                # 3. replaced by an allow for app=client on port 80
                await policy(ALLOW, True)
                assert remote_addr(await fetch(10)) == client_ip
                # 4. deny again, then delete: refused, then allowed with no table
                await policy(DENY, True)
                assert await fetch(3) == ""
                await policy(None, False)
                assert remote_addr(await fetch(10)) == client_ip
            finally:
                for t in tasks:
                    t.cancel()
        for rt in runtimes.values():
            with contextlib.suppress(Exception):
                await rt.close()
