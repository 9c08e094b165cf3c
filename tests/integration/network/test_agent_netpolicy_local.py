"""Network policy between two containers on one device, and egress, end to end: stored
policies, compiled by the leader's publisher, programmed by the agent, real containerd in a
namespace lab.

Device ``d1`` runs ``client-0`` (namespace ``default``, app=client) and ``web-0`` (namespace
``shop``, busybox httpd on port 80) on its bridge ``cl0``; ``lh`` (the lighthouse host,
192.168.77.1, outside the container and overlay ranges) serves HTTP on 8443 and 8080, and
stands in for an address beyond the cluster (the device masquerades what leaves it).

1. no policy: client reaches web and both outside ports;
2. ``shop-ingress`` denies namespace default: client -> web is refused, though both sit on
   one bridge (the agent hands the bridge's frames to netfilter);
3. ``client-out`` limits client's egress to 192.168.77.1/32 port 8443: 8443 works, 8080 is
   refused;
4. shop allows app=client on 80 and client-out also allows namespace shop on 80: allowed;
   without the egress rule (shop allows, client-out does not name shop) it stays refused;
5. both deleted: the table is removed, everything connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
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
    ALLOW,
    CFG,
    DENY,
    LH_ADDR,
    PLAN,
    WEB_CMD,
    spec,
    wait_for,
)
from tests.integration.network.test_overlay_services import remote_addr

pytestmark = [pytest.mark.netns, pytest.mark.integration]

BASE = "cl18l-"
OUTSIDE = "192.168.77.1"


def client_out(*, shop: bool) -> dict[str, object]:
    rules: list[dict[str, object]] = [
        {"to": [{"cidr": f"{OUTSIDE}/32"}], "ports": [{"port": 8443}]},
    ]
    if shop:
        rules.append({"to": [{"namespace": "shop"}], "ports": [{"port": 80}]})
    return {
        "name": "client-out",
        "namespace": "default",
        "selector": {"app": "client"},
        "egress": rules,
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

    def repush(nodes: list[str]) -> None:  # what the hub does: send the node its message
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
    sup.assign([Assigned("web-0", "web", 1, web), Assigned("client-0", "client", 1, client)])

    def running(rid: str) -> bool:
        w = sup.workers.get(rid)
        return w is not None and w.status.state is ReplicaState.RUNNING

    async def both() -> bool:
        return running("web-0") and running("client-0")

    await wait_for(both, 60, "web-0 and client-0 running")
    web_ep = sup.workers["web-0"].status.endpoint
    client_ep = sup.workers["client-0"].status.endpoint
    web_ip, client_ip = web_ep.rsplit(":", 1)[0], client_ep.rsplit(":", 1)[0]
    # the same device, the same bridge subnet
    assert web_ip.startswith("10.42.0.") and client_ip.startswith("10.42.0.")
    for s, rid, ep in ((web, "web-0", web_ep), (client, "client-0", client_ep)):
        await state.workloads.put(s.name, WorkloadRecord(s))
        r = Replica(rid, s.name, "d1", observed=ReplicaState.RUNNING, endpoint=ep)
        await state.replicas.put(replica_name(s.name, rid), r)
    await pub.refresh()

    async def fetch(url: str, tries: int) -> str:
        for _ in range(tries):
            r = await rt.exec_in_container(
                "client-0", ["busybox", "timeout", "3", "busybox", "wget", "-qO-", url], 5
            )
            if r.exit_code == 0 and r.output.strip():
                return r.output
            await asyncio.sleep(0.3)
        return ""

    to_web = f"http://{web_ip}/cgi-bin/ip"
    out_ok, out_other = f"http://{OUTSIDE}:8443/ok", f"http://{OUTSIDE}:8080/ok"

    async def table() -> str:
        return await asyncio.to_thread(
            run, [*lab.devices["d1"].argv, "nft", "list", "tables"], check=False
        )

    async def policy(name: str, doc: dict[str, object] | None, programmed: bool) -> None:
        if doc is None:
            await state.netpolicies.delete(name)
        else:
            await state.netpolicies.put(name, policy_to_dict(parse_policy(doc)))
        await pub.refresh()

        async def applied() -> bool:
            return ("cloudless_policy" in await table()) == programmed

        await wait_for(applied, 10, f"d1's policy table {programmed=}")

    # 1. no policy
    assert remote_addr(await fetch(to_web, 20)) == client_ip
    assert (await fetch(out_ok, 10)).strip() == "outside"
    assert (await fetch(out_other, 3)).strip() == "outside"
    # 2. shop denies default: refused on the same bridge
    await policy("shop-ingress", DENY, True)
    assert await fetch(to_web, 3) == ""
    assert (await fetch(out_other, 3)).strip() == "outside"  # egress still open
    # 3. client's egress limited to the outside address on 8443
    await policy("client-out", client_out(shop=False), True)
    assert (await fetch(out_ok, 5)).strip() == "outside"
    assert await fetch(out_other, 3) == ""
    # 4. shop allows app=client on 80, but client's egress does not name shop: refused;
    #    with the egress rule for shop on 80: allowed
    await policy("shop-ingress", ALLOW, True)
    assert await fetch(to_web, 3) == ""
    await policy("client-out", client_out(shop=True), True)
    assert remote_addr(await fetch(to_web, 10)) == client_ip
    # 5. both deleted: no table, everything connects
    await policy("client-out", None, True)
    await policy("shop-ingress", None, False)
    assert remote_addr(await fetch(to_web, 10)) == client_ip
    assert (await fetch(out_other, 5)).strip() == "outside"
