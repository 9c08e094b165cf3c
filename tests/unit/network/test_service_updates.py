"""Service-table changes on the agent stream: what the coordinator sends, how the agent
patches its table, and that the patched table is the whole table at the new revision."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.agent.link import AssignmentFile, Link
from cloudless.agent.network import AgentNetwork
from cloudless.api.gen.cloudlessapi import agent_pb2 as pb
from cloudless.lib.clock import FakeClock
from cloudless.network.service_updates import (
    StaleServicesUpdate,
    apply_update,
    by_key,
    table_update,
)


def svc(name: str, *eps: str, ns: str = "default") -> pb.NetworkService:
    return pb.NetworkService(
        namespace=ns,
        name=name,
        vip="10.43.0.1",
        ports=[pb.NetworkServicePort(port=80, protocol="tcp")],
        endpoints=[pb.NetworkEndpoint(ip=ip, replica=f"{name}-{i}") for i, ip in enumerate(eps)],
    )


WEB, WEB2, DB = svc("web", "10.42.1.2"), svc("web", "10.42.2.2"), svc("db", "10.42.1.3")
SHOP_WEB = svc("web", "10.42.1.9", ns="shop")

UPDATES = [
    # (old table, new table, upserts (names), removed)
    ([WEB, DB], [WEB, DB], None, None),  # equal: nothing to send
    ([WEB, DB], [WEB2, DB], ["web"], []),  # web's endpoint moved: web alone, whole
    ([WEB], [WEB, DB], ["db"], []),  # db added
    ([WEB, DB], [DB], [], ["default/web"]),  # web removed: its key
    ([WEB], [SHOP_WEB], ["web"], ["default/web"]),  # same name, other namespace
]


@pytest.mark.parametrize(("old", "new", "upserts", "removed"), UPDATES)
def test_table_update(
    old: list[pb.NetworkService],
    new: list[pb.NetworkService],
    upserts: list[str] | None,
    removed: list[str] | None,
) -> None:
    u = table_update(by_key(old), by_key(new), 7, 8)
    if upserts is None:
        assert u is None
        return
    assert u is not None and (u.base, u.revision) == (7, 8)
    assert [s.name for s in u.upserts] == upserts
    assert list(u.removed) == removed


def test_an_update_from_another_table_is_refused_and_changes_nothing() -> None:
    cfg = pb.NetworkConfig(slot=1, services=[WEB], services_revision=5)
    u = pb.NetworkServicesUpdate(base=4, revision=6, upserts=[DB])
    with pytest.raises(StaleServicesUpdate, match=r"revision 4.*holds revision 5"):
        apply_update(cfg, u)
    assert list(cfg.services) == [WEB] and cfg.services_revision == 5


def test_patched_config_keeps_everything_else() -> None:
    cfg = pb.NetworkConfig(slot=1, services=[WEB, DB], services_revision=5, blocklist=["fp"])
    out = apply_update(cfg, pb.NetworkServicesUpdate(base=5, revision=6, upserts=[WEB2]))
    assert (out.slot, list(out.blocklist), out.services_revision) == (1, ["fp"], 6)
    assert [s.name for s in out.services] == ["db", "web"]  # the order a whole config has
    assert out.services[1] == WEB2
    assert cfg.services_revision == 5  # the input is not changed


def _tables() -> st.SearchStrategy[list[pb.NetworkService]]:
    one = st.builds(
        svc,
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["10.42.1.2", "10.42.2.2", "10.42.3.2"]),
        ns=st.sampled_from(["default", "shop"]),
    )
    return st.lists(one, max_size=6).map(lambda xs: list(by_key(xs).values()))


@given(_tables(), _tables())
def test_patching_gives_the_whole_new_table(
    old: list[pb.NetworkService], new: list[pb.NetworkService]
) -> None:
    def key(s: pb.NetworkService) -> tuple[str, str]:
        return (s.namespace, s.name)

    order = sorted(new, key=key)
    held = sorted(old, key=key)
    cfg = pb.NetworkConfig(slot=0, services=held)
    u = table_update(by_key(old), by_key(new), 0, 1)
    got = apply_update(cfg, u) if u is not None else cfg
    assert list(got.services) == order


async def test_agent_applies_a_change_only_to_its_base(tmp_path: Path) -> None:
    d = tmp_path
    net = AgentNetwork(d, "n1", clock=FakeClock(), prerequisite=lambda: "no nft here")
    u = pb.NetworkServicesUpdate(base=3, revision=4, upserts=[WEB2])
    assert net.update_services(u) is None  # no config yet
    net.update(pb.NetworkConfig(slot=0, services=[WEB, DB], services_revision=3))
    patched = net.update_services(u)
    assert patched is not None and patched.services_revision == 4
    assert net._desired == patched
    assert net.update_services(u) is None  # base 3 again: the table is at 4 now
    # the agent file keeps the patched table for a restart, and the set beside it
    f = AssignmentFile(d)
    f.save(pb.Assignments(generation=2, network=pb.NetworkConfig(slot=0)))
    f.save_network(patched)
    assert f.load_network() == patched


async def test_the_agent_link_hands_a_change_to_the_network_and_keeps_it(tmp_path: Path) -> None:
    net = AgentNetwork(tmp_path, "n1", clock=FakeClock(), prerequisite=lambda: "no nft here")
    f = AssignmentFile(tmp_path)
    assigned: list[object] = []
    link = Link(
        cast(Any, SimpleNamespace()),
        cast(Any, SimpleNamespace(assign=assigned.append)),
        cast(Any, None),
        pb.NodeFacts,
        cast(Any, None),
        FakeClock(),
        random.Random(0),
        f,
        dialer=cast(Any, object()),
        network=net.update,
        services_update=net.update_services,
    )
    outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
    whole = pb.NetworkConfig(slot=0, services=[WEB, DB], services_revision=3)
    link._handle(
        pb.CoordinatorMessage(assignments=pb.Assignments(generation=1, network=whole)), outbox, ""
    )
    update = pb.NetworkServicesUpdate(base=3, revision=4, upserts=[WEB2])
    link._handle(pb.CoordinatorMessage(services_update=update), outbox, "")
    assert net._desired is not None and net._desired.services_revision == 4
    assert list(net._desired.services) == [DB, WEB2]
    on_disk = f.load_network()  # a restarted agent starts from the patched table
    assert on_disk is not None and list(on_disk.services) == [DB, WEB2]
    # an update from another base changes nothing, in memory or on disk
    link._handle(
        pb.CoordinatorMessage(services_update=pb.NetworkServicesUpdate(base=9, revision=10)),
        outbox,
        "",
    )
    assert net._desired.services_revision == 4 and f.load_network() == on_disk
