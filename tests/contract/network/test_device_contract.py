"""The agent-side pieces on fakes and on the real tools (namespaces, CNI, nft)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dnslib import DNSRecord

from cloudless.network.addressing import AddressPlanConfig
from cloudless.network.cni import CniInvoker, FakeContainerNetwork, bridge_conflist
from cloudless.network.device import (
    ContainerNetworks,
    FakeNetns,
    IpNetns,
    ServicesProgrammer,
    resolv_conf,
)
from cloudless.network.dns_server import DnsServer
from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nft_apply import FakeNftTable, NftApplier, RuleTable
from cloudless.network.testing import Namespaces
from tests.contract.network.test_cni_contract import HAVE_CNI
from tests.unit.network.builders import CTX, svc

ADDR = AddressPlanConfig().plan().addresses(3)  # 10.42.3.0/24


@dataclass
class Rig:
    nets: ContainerNetworks
    rules: RuleTable
    real: bool


@pytest.fixture(params=["fake", "real"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "fake":
        yield Rig(ContainerNetworks(FakeContainerNetwork(ADDR), FakeNetns()), FakeNftTable(), False)
        return
    if not HAVE_CNI:
        pytest.skip("CNI plugins missing (containernetworking-plugins)")
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("dev")
    host = ("ip", "netns", "exec", dev)
    conf = bridge_conflist(ADDR, data_dir=str(tmp_path / "ipam"))
    cni = CniInvoker(conf, str(tmp_path / "state"), host_argv=host)
    # container namespaces carry the test's prefix, so a failed run is swept like the rest
    yield Rig(
        ContainerNetworks(cni, IpNetns(), prefix=f"{ns.prefix}-k"), NftApplier(host_argv=host), True
    )


async def test_attach_detach(rig: Rig) -> None:
    path, a = await rig.nets.attach("c1")
    assert ADDR.owns(a.ip) is None
    assert rig.nets.name("c1") in await rig.nets.netns.names()
    if rig.real:
        assert path == f"/run/netns/{rig.nets.name('c1')}"
    await rig.nets.detach("c1")
    await rig.nets.detach("c1")  # idempotent
    assert rig.nets.name("c1") not in await rig.nets.netns.names()
    assert await rig.nets.cni.leases() == {}


async def test_failed_attach_leaves_no_namespace(rig: Rig) -> None:
    if isinstance(rig.nets.cni, FakeContainerNetwork):
        rig.nets.cni.fail_next_add = "plugin exploded"
    else:
        rig.nets.cni.conflist["plugins"][0]["type"] = "no-such-plugin"  # type: ignore[attr-defined]
    with pytest.raises(NetworkEdgeError):
        await rig.nets.attach("c1")
    assert rig.nets.name("c1") not in await rig.nets.netns.names()


async def test_collect_containers_that_died(rig: Rig) -> None:
    await rig.nets.attach("keep")
    await rig.nets.attach("dead")
    assert await rig.nets.collect({"keep"}) == ["dead"]
    assert sorted(await rig.nets.cni.attached()) == ["keep"]
    assert rig.nets.name("dead") not in await rig.nets.netns.names()


class Refusing(FakeNftTable):
    async def apply(self, document: str) -> None:
        raise NetworkEdgeError("nft refused the table: no")


async def test_programmer_keeps_rules_names_and_conntrack_in_step(rig: Rig) -> None:
    dns = DnsServer()
    p = ServicesProgrammer(CTX, rig.rules, dns)
    two = svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5")
    assert await p.apply([two]) is True
    assert await rig.rules.programmed() == {"10.43.0.1 tcp 80": ["10.42.1.5:80", "10.42.2.5:80"]}
    assert await p.apply([two]) is False  # same table: nothing to do
    one = svc("web", "10.43.0.1", "10.42.2.5")
    assert await p.apply([one]) is True
    assert p.last_kind == "delta"  # the first apply replaced the table, this one changed web
    assert await rig.rules.programmed() == {"10.43.0.1 tcp 80": ["10.42.2.5:80"]}
    if isinstance(rig.rules, FakeNftTable):
        assert [a[-1] for a in rig.rules.conntrack] == ["10.42.1.5"]  # the gone endpoint
    r = dns.index.answer(DNSRecord.question("web.default.cloudless"))
    assert r is not None and [str(x.rdata) for x in r.rr] == ["10.43.0.1"]


async def test_refused_table_changes_nothing() -> None:
    dns = DnsServer()
    p = ServicesProgrammer(CTX, Refusing(), dns)
    with pytest.raises(NetworkEdgeError, match="refused"):
        await p.apply([svc("web", "10.43.0.1", "10.42.1.5")])
    assert p.applied == ()
    assert len(dns.index) == 0


async def test_programmer_replaces_a_table_changed_behind_its_back(rig: Rig) -> None:
    p = ServicesProgrammer(CTX, rig.rules)
    await p.apply([svc("web", "10.43.0.1", "10.42.1.5"), svc("db", "10.43.0.2", "10.42.2.5")])
    await rig.rules.remove()  # someone deleted the table: the change alone cannot apply
    assert await p.apply([svc("web", "10.43.0.1", "10.42.1.6")]) is True
    assert p.last_kind == "full"
    assert await rig.rules.programmed() == {"10.43.0.1 tcp 80": ["10.42.1.6:80"]}


def test_resolv_conf() -> None:
    assert resolv_conf("10.42.3.1", "shop") == (
        "nameserver 10.42.3.1\nsearch shop.cloudless cloudless\noptions ndots:2\n"
    )
