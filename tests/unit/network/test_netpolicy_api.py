"""Network policies over HTTP (an in-process aiohttp app on the real routes and a memory
store): bad documents are refused naming the field and nothing is stored; apply, get, list,
replace and delete; and the publisher re-pushes exactly the devices whose table changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.coordinator.userapi.errors import errors
from cloudless.lib.clock import FakeClock
from cloudless.model.replica import Replica, ReplicaState
from cloudless.model.workload import parse_workload
from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.netpolicy_api import NetPolicyApi
from cloudless.network.publisher import NetworkPublisher
from cloudless.network.state import assign_device
from cloudless.network.wire import DeviceConfig
from cloudless.store.fence import NO_FENCE
from cloudless.store.memory import MemoryStore
from cloudless.store.tables.replicas import replica_name

Env = tuple[TestClient[Any, Any], ClusterState]


async def _emit(*a: Any, **k: Any) -> None:
    return None


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    state = ClusterState(MemoryStore(FakeClock(0.0)))
    app = web.Application(middlewares=[errors])
    NetPolicyApi(state, lambda: NO_FENCE, _emit).add_routes(app.router)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, state
    await client.close()


GOOD: dict[str, Any] = {
    "name": "db-from-web",
    "namespace": "db",
    "ingress": [{"from": [{"namespace": "web"}], "ports": [{"port": 5432}]}],
}


YAML = """
kind: NetworkPolicy
name: db-from-web
namespace: db
ingress:
  - from: [{namespace: web}]
    ports: [{port: 5432}]
"""


def bad(**kw: Any) -> dict[str, Any]:
    return {**GOOD, **kw}


# (document, a fragment of the 400's problems naming the field)
BAD: list[tuple[Any, str]] = [
    ("[1, 2", "network policy: "),  # not YAML/JSON
    (["a"], "policy: expected a mapping"),
    (bad(name="Bad_Name"), "name: 'Bad_Name' must be a DNS label"),
    (bad(namespace=""), "namespace: '' must be a DNS label"),
    (bad(ingress=[]), "ingress: a non-empty list of rules is required"),
    (bad(ingress=[{"action": "maybe", "from": [{"namespace": "web"}]}]), "ingress[0].action"),
    (bad(ingress=[{"from": []}]), "ingress[0].from: a non-empty list"),
    (bad(ingress=[{"from": [{"namespace": "Web!"}]}]), "ingress[0].from[0].namespace"),
    (
        bad(ingress=[{"from": [{"namespace": "web"}], "ports": [{"port": 0}]}]),
        "ingress[0].ports[0].port: 0 must be a whole number in 1..65535",
    ),
    (
        bad(
            ingress=[{"from": [{"namespace": "web"}], "ports": [{"port": 53, "protocol": "sctp"}]}]
        ),
        "ingress[0].ports[0].protocol: 'sctp'",
    ),
    (bad(selector={"app": 3}), "selector.app: 3 is not a label value"),
    (bad(egress=[]), "egress: a non-empty list of rules is required"),
    (bad(outgress=[]), "outgress: unknown field"),
    (bad(egress=[{"to": [{"cidr": "10.0.0.1/8"}]}]), "egress[0].to[0].cidr: '10.0.0.1/8'"),
]


@pytest.mark.parametrize(("doc", "why"), BAD)
async def test_bad_documents_are_refused_by_field_and_nothing_is_stored(
    env: Env, doc: Any, why: str
) -> None:
    client, state = env
    body = doc if isinstance(doc, str) else json.dumps(doc)
    res = await client.post("/v1/netpolicies", data=body)
    assert res.status == 400
    err = (await res.json())["error"]
    assert any(why in p for p in [err["message"], *err.get("problems", [])]), err
    assert not (await state.netpolicies.list()).records


async def test_apply_get_list_replace_delete(env: Env) -> None:
    client, _ = env
    res = await client.post("/v1/netpolicies", data=YAML)  # a file for `netpolicy apply -f`
    assert res.status == 201
    got = (await res.json())["netpolicy"]
    assert got["ingress"][0]["ports"] == [{"port": 5432, "protocol": "tcp"}]
    assert got["ingress"][0]["action"] == "allow"  # the defaults are written out
    res = await client.post("/v1/netpolicies", data=json.dumps(GOOD))
    assert res.status == 200  # same name: replaced
    listed = await (await client.get("/v1/netpolicies")).json()
    assert [p["name"] for p in listed["netpolicies"]] == ["db-from-web"]
    none = await (await client.get("/v1/netpolicies?namespace=web")).json()
    assert none["netpolicies"] == []
    one = await client.get("/v1/netpolicies/db-from-web")
    assert (await one.json())["netpolicy"]["namespace"] == "db"
    assert (await client.delete("/v1/netpolicies/db-from-web")).status == 200
    missing = await client.delete("/v1/netpolicies/db-from-web")
    assert missing.status == 404
    assert "cloudless netpolicy get" in (await missing.json())["error"]["message"]
    assert (await client.get("/v1/netpolicies/db-from-web")).status == 404


async def _run(state: ClusterState, workload: str, ns: str, rid: str, node: str, ep: str) -> None:
    spec = parse_workload({"name": workload, "image": "busybox", "namespace": ns})
    await state.workloads.put(workload, WorkloadRecord(spec))
    r = Replica(rid, workload, node, observed=ReplicaState.RUNNING, endpoint=ep)
    await state.replicas.put(replica_name(workload, rid), r)


async def test_publisher_repushes_only_the_devices_whose_table_changes(env: Env) -> None:
    client, state = env
    cfg = AddressPlanConfig()
    for n in ("n1", "n2"):
        await assign_device(state.store, cfg.plan(), n)
    # slot 0 = 10.42.0.0/24 (n1: web), slot 1 = 10.42.1.0/24 (n2: db)
    await _run(state, "web", "web", "web-0", "n1", "10.42.0.2:80")
    await _run(state, "db", "db", "db-0", "n2", "10.42.1.2:5432")
    pushed: list[list[str]] = []
    pub = NetworkPublisher(state.store, cfg, FakeClock(), lambda ns: pushed.append(list(ns)))
    assert await pub.refresh() == ["n1", "n2"]  # first round: everyone
    assert DeviceConfig.from_pb(pub.config_for("n2")).policy_chains == ()  # no policy: open

    assert (await client.post("/v1/netpolicies", data=json.dumps(GOOD))).status == 201
    assert await pub.refresh() == ["n2"]  # db is in namespace db; n1 hosts nothing policed
    chains = DeviceConfig.from_pb(pub.config_for("n2")).policy_chains
    assert [(c.workload.name, c.addresses) for c in chains] == [("db", ("10.42.1.2",))]
    assert chains[0].lines[0].sources == ("10.42.0.2",)  # web-0 allowed on tcp/5432

    await _run(state, "web", "web", "web-1", "n1", "10.42.0.3:80")  # a new source
    assert await pub.refresh() == ["n2"]
    chains = DeviceConfig.from_pb(pub.config_for("n2")).policy_chains
    assert chains[0].lines[0].sources == ("10.42.0.2", "10.42.0.3")

    assert (await client.delete("/v1/netpolicies/db-from-web")).status == 200
    assert await pub.refresh() == ["n2"]
    assert DeviceConfig.from_pb(pub.config_for("n2")).policy_chains == ()
