"""RuleTable contract: nft in a namespace and the fake, given rendered tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nft import render, render_delta, stale_conntrack
from cloudless.network.nft_apply import FakeNftTable, NftApplier, RuleTable
from cloudless.network.testing import Namespaces, run
from tests.unit.network.builders import CTX, svc


@pytest.fixture(params=["fake", "nft"])
async def table(request: pytest.FixtureRequest) -> AsyncIterator[RuleTable]:
    if request.param == "fake":
        yield FakeNftTable()
        return
    ns: Namespaces = request.getfixturevalue("namespaces")
    dev = ns.create("dev")
    yield NftApplier(host_argv=("ip", "netns", "exec", dev))


WEB = svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5", ports=(80, 443))
DB = svc("db", "10.43.0.2", "10.42.3.7", ports=(5432,), balance="source-hash")
IDLE = svc("idle", "10.43.0.3", ports=(53,), proto="udp")


async def test_programmed_matches_the_services(table: RuleTable) -> None:
    assert await table.programmed() == {}
    await table.apply(render(CTX, [WEB, DB, IDLE]))
    assert await table.programmed() == {
        "10.43.0.1 tcp 80": ["10.42.1.5:80", "10.42.2.5:80"],
        "10.43.0.1 tcp 443": ["10.42.1.5:443", "10.42.2.5:443"],
        "10.43.0.2 tcp 5432": ["10.42.3.7:5432"],
        "10.43.0.3 udp 53": [],
    }


async def test_replace_swaps_the_whole_table(table: RuleTable) -> None:
    await table.apply(render(CTX, [WEB, DB]))
    moved = svc("web", "10.43.0.1", "10.42.2.5", "10.42.4.9", ports=(80, 443))
    await table.apply(render(CTX, [moved]))
    assert await table.programmed() == {
        "10.43.0.1 tcp 80": ["10.42.2.5:80", "10.42.4.9:80"],
        "10.43.0.1 tcp 443": ["10.42.2.5:443", "10.42.4.9:443"],
    }


async def test_refused_document_leaves_the_old_table(table: RuleTable) -> None:
    await table.apply(render(CTX, [WEB]))
    before = await table.programmed()
    bad = render(CTX, [WEB, DB]).replace("dnat to 10.42.3.7 ", "dnat to banana ")
    with pytest.raises(NetworkEdgeError, match="refused"):
        await table.apply(bad)
    assert await table.programmed() == before


async def test_remove_is_idempotent(table: RuleTable) -> None:
    await table.apply(render(CTX, [WEB]))
    await table.remove()
    await table.remove()
    assert await table.programmed() == {}


async def test_conntrack_flush_of_nothing_is_fine(table: RuleTable) -> None:
    if isinstance(table, NftApplier) and run(["which", "conntrack"], check=False) == "":
        pytest.skip("conntrack not installed")
    argvs = stale_conntrack([WEB], [])
    assert len(argvs) == 2  # 2 endpoints gone from every port: one deletion each
    assert await table.flush_conntrack(argvs) == 0


async def test_delta_changes_only_what_changed(table: RuleTable) -> None:
    await table.apply(render(CTX, [WEB, DB, IDLE]))
    moved = svc("web", "10.43.0.1", "10.42.2.5", "10.42.4.9", ports=(80, 443))
    new_db = svc("db", "10.43.0.2", ports=(5432,))  # its last endpoint gone
    woke = svc("idle", "10.43.0.3", "10.42.5.5", ports=(53,), proto="udp")
    extra = svc("extra", "10.43.0.4", "10.42.1.9")
    before, after = [WEB, DB, IDLE], [moved, new_db, woke, extra]
    await table.apply(render_delta(CTX, before, after))
    assert await table.programmed() == {
        "10.43.0.1 tcp 80": ["10.42.2.5:80", "10.42.4.9:80"],
        "10.43.0.1 tcp 443": ["10.42.2.5:443", "10.42.4.9:443"],
        "10.43.0.2 tcp 5432": [],
        "10.43.0.3 udp 53": ["10.42.5.5:53"],
        "10.43.0.4 tcp 80": ["10.42.1.9:80"],
    }
    await table.apply(render_delta(CTX, after, before))  # and back, services removed too
    assert await table.programmed() == {
        "10.43.0.1 tcp 80": ["10.42.1.5:80", "10.42.2.5:80"],
        "10.43.0.1 tcp 443": ["10.42.1.5:443", "10.42.2.5:443"],
        "10.43.0.2 tcp 5432": ["10.42.3.7:5432"],
        "10.43.0.3 udp 53": [],
    }


async def test_delta_for_another_table_is_refused_whole(table: RuleTable) -> None:
    await table.apply(render(CTX, [WEB]))
    before = await table.programmed()
    moved = svc("web", "10.43.0.1", "10.42.2.5", ports=(80, 443))
    # written for a table holding db too: deleting db's element fails, so nothing changes
    with pytest.raises(NetworkEdgeError, match="refused"):
        await table.apply(render_delta(CTX, [WEB, DB], [moved]))
    assert await table.programmed() == before


async def test_source_hash_over_several_endpoints(table: RuleTable) -> None:
    sticky = svc("db", "10.43.0.2", "10.42.3.7", "10.42.4.7", ports=(5432,), balance="source-hash")
    await table.apply(render(CTX, [sticky]))
    assert await table.programmed() == {"10.43.0.2 tcp 5432": ["10.42.3.7:5432", "10.42.4.7:5432"]}
    moved = svc("db", "10.43.0.2", "10.42.4.7", "10.42.5.7", ports=(5432,), balance="source-hash")
    await table.apply(render_delta(CTX, [sticky], [moved]))
    assert await table.programmed() == {"10.43.0.2 tcp 5432": ["10.42.4.7:5432", "10.42.5.7:5432"]}
