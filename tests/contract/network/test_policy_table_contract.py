"""PolicyTable contract: nft in a namespace and the fake, given ``netpolicy_nft`` tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloudless.network.errors import NetworkEdgeError
from cloudless.network.netpolicy import WorkloadRef, parse_policy
from cloudless.network.netpolicy_nft import Endpoint, render
from cloudless.network.nft_apply import FakePolicyTable, NftPolicyTable, PolicyTable
from cloudless.network.testing import Namespaces


@pytest.fixture(params=["fake", "nft"])
async def table(request: pytest.FixtureRequest) -> AsyncIterator[PolicyTable]:
    if request.param == "fake":
        yield FakePolicyTable()
        return
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("dev")
    yield NftPolicyTable(host_argv=("ip", "netns", "exec", dev))


DB = Endpoint("10.42.1.2", WorkloadRef("db", "db", {"app": "db"}))
DB2 = Endpoint("10.42.1.10", WorkloadRef("db", "db", {"app": "db"}))
WEB = Endpoint("10.42.0.2", WorkloadRef("web", "web", {"app": "web"}))
POLICY = parse_policy(
    {"name": "p", "namespace": "db", "ingress": [{"from": [{"namespace": "web"}]}]}
)
CIDR = "10.42.0.0/16"


async def test_apply_replaces_and_remove_deletes(table: PolicyTable) -> None:
    assert await table.destinations() == []
    await table.apply(render([POLICY], [DB, WEB], [DB], CIDR))
    assert await table.destinations() == ["10.42.1.2"]
    await table.apply(render([POLICY], [DB, DB2, WEB], [DB, DB2], CIDR))
    assert await table.destinations() == ["10.42.1.2", "10.42.1.10"]  # numeric order
    await table.remove()
    assert await table.destinations() == [] and table.document == ""
    await table.remove()  # idempotent


async def test_refused_document_leaves_the_old_table(table: PolicyTable) -> None:
    good = render([POLICY], [DB, WEB], [DB], CIDR)
    await table.apply(good)
    with pytest.raises(NetworkEdgeError, match="refused"):
        await table.apply(good.replace("10.42.1.2 : goto", "10.42.1.999 : goto"))
    assert await table.destinations() == ["10.42.1.2"]
    assert table.document == good
