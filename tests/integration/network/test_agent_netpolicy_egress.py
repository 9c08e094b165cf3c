"""Egress network policy end to end: a stored policy, compiled by the leader's publisher,
programmed by the agent, real containerd in a namespace lab.

Device ``d1`` runs ``client-0`` (namespace ``default``, app=client); ``lh`` (the lighthouse
host, 192.168.77.1, outside the container and overlay ranges) serves HTTP on 8443 and 8080,
and stands in for an address beyond the cluster (the device masquerades what leaves it).

1. no policy: client reaches both outside ports, d1 has no policy table;
2. ``client-out`` limits client's egress to 192.168.77.1/32 port 8443: 8443 works, 8080 is
   refused;
3. deleted: the table is removed, 8080 works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterable
from pathlib import Path

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
from tests.integration.network.test_agent_netpolicy import (
    CFG,
    LH_ADDR,
    PLAN,
    WEB_CMD,
    spec,
    wait_for,
)

pytestmark = [pytest.mark.netns, pytest.mark.integration]

BASE = "cl18l-"
OUTSIDE = "192.168.77.1"


def client_out() -> dict[str, object]:
    return {
        "name": "client-out",
        "namespace": "default",
        "selector": {"app": "client"},
        "egress": [{"to": [{"cidr": f"{OUTSIDE}/32"}], "ports": [{"port": 8443}]}],
    }


@pytest.fixture
async def lab(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not containerd_available() or not registry_available():
        pytest.skip("containerd/runc or docker-registry binaries are not installed")
    sweep_dead_runs(BASE)
    lab = NetLab("a", tmp_path, PLAN, base=BASE)
    try:
        lab.switch("pub", "192.168.77.0/24")
        lab.device("lh", 0, "pub", f"{OUTSIDE}/24")
        lab.device("d1", 0, "pub", "192.168.77.11/24")
        yield lab
    finally:
        lab.close()


async def test_same_device_and_egress(lab: NetLab, tmp_path: Path) -> None:
    clock = SystemClock()
    store = MemoryStore(clock)
    state = ClusterState(store)
    ca = NebulaCA(tmp_path / "ca" / "nebula")
    lighthouse = Lighthouse(ca, PLAN, LH_ADDR, tmp_path / "lh", host_argv=lab.devices["lh"].argv)
    net = AgentNetwork(
        tmp_path / "d1",
        "d1",
        public=True,
        clock=clock,
        host_netns=lab.devices["d1"].ns,
        netns_prefix=f"{lab.nss.prefix}-d1-c-",
        attach_timeout=60,
    )

    def repush(nodes: Iterable[str]) -> None:  # what the hub does: send the node its message
        for n in nodes:
            net.update(pub.config_for(n))

    pub = NetworkPublisher(
        store,
        CFG,
        clock,
        repush,
        ca=ca,
        lighthouses={str(PLAN.lighthouse_ip): [LH_ADDR]},
    )
    await assign_device(store, PLAN, "d1")
    www = tmp_path / "www"
    www.mkdir()
    (www / "ok").write_text("outside\n")
    servers = [
        await asyncio.create_subprocess_exec(
            *lab.devices["lh"].argv,
            *("busybox", "httpd", "-f", "-p", f"{OUTSIDE}:{port}", "-h", str(www)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for port in (8443, 8080)
    ]
    try:
        async with (
            PrivateRegistry(root_dir=tmp_path / "reg") as reg,
            PrivateContainerd(tmp_path / "ctrd") as cd,
        ):
            image = await build_busybox_image(reg, "busybox", "1")
            web = spec("web", "shop", image, WEB_CMD, (80,))
            client = spec("client", "default", image, "exec sleep 600", ())
            rt = ContainerdRuntime(
                cd.address,
                data_dir=tmp_path / "d1" / "rt",
                namespace=f"npl-{secrets.token_hex(2)}",
                registry=reg.registry_config(),
            )
            sup = Supervisor(rt, clock, lambda: None, network=net)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(lighthouse.run()),
                    tg.create_task(rt.run()),
                    tg.create_task(net.run()),
                    tg.create_task(sup.run([])),
                ]
                try:
                    await _scenario(lab, state, pub, net, sup, rt, web, client)
                finally:
                    for t in tasks:
                        t.cancel()
            with contextlib.suppress(Exception):
                await rt.close()
    finally:
        for s in servers:
            s.terminate()
            await s.wait()


async def _scenario(lab, state, pub, net, sup, rt, web, client) -> None:  # type: ignore[no-untyped-def]
    assert await pub.refresh() == ["d1"]
    await net.bring_up(pub.config_for("d1"))
    assert net.state == "up", net.reason
    sup.assign([Assigned("client-0", "client", 1, client)])

    async def running() -> bool:
        w = sup.workers.get("client-0")
        return w is not None and w.status.state is ReplicaState.RUNNING

    await wait_for(running, 60, "client-0 running")
    client_ep = sup.workers["client-0"].status.endpoint
    assert client_ep.startswith("10.42.0.") and client_ep.endswith(":0")
    await state.workloads.put(client.name, WorkloadRecord(client))
    r = Replica("client-0", client.name, "d1", observed=ReplicaState.RUNNING, endpoint=client_ep)
    await state.replicas.put(replica_name(client.name, "client-0"), r)
    await pub.refresh()

    async def fetch(url: str, tries: int) -> str:
        for _ in range(tries):
            r = await rt.exec_in_container(
                "client-0", ["busybox", "timeout", "3", "busybox", "wget", "-qO-", url], 5
            )
            if r.exit_code == 0 and r.output.strip():
                return str(r.output)
            await asyncio.sleep(0.3)
        return ""

    out_ok, out_other = f"http://{OUTSIDE}:8443/ok", f"http://{OUTSIDE}:8080/ok"

    async def table() -> str:
        return await asyncio.to_thread(
            run, [*lab.devices["d1"].argv, "nft", "list", "tables"], check=False
        )

    async def policy(doc: dict[str, object] | None, programmed: bool) -> None:
        if doc is None:
            await state.netpolicies.delete("client-out")
        else:
            await state.netpolicies.put("client-out", policy_to_dict(parse_policy(doc)))
        assert await pub.refresh() == ["d1"]

        async def applied() -> bool:
            return ("cloudless_policy" in await table()) == programmed

        await wait_for(applied, 10, f"d1's policy table {programmed=}")

    # 1. no policy: egress is open
    assert (await fetch(out_ok, 20)).strip() == "outside"
    assert (await fetch(out_other, 5)).strip() == "outside"
    assert "cloudless_policy" not in await table()
    # 2. client's egress limited to the outside address on 8443
    await policy(client_out(), True)
    assert (await fetch(out_ok, 5)).strip() == "outside"
    assert await fetch(out_other, 3) == ""
    # 3. deleted: no table, 8080 works again
    await policy(None, False)
    assert (await fetch(out_other, 10)).strip() == "outside"
