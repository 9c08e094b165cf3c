"""nftables rendering: what each service turns into, line by line."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.network.errors import NetworkEdgeError
from cloudless.network.nft import delete_document, render, render_delta, stale_conntrack
from cloudless.network.nft_apply import FakeNftTable
from tests.unit.network.builders import CTX, svc


def lines(doc: str) -> list[str]:
    return [ln.strip() for ln in doc.splitlines()]


def test_document_replaces_the_table_in_one_transaction() -> None:
    doc = lines(render(CTX, []))
    # create-if-absent, delete, define: one nft -f run is one transaction
    assert doc[:3] == ["table ip cloudless", "delete table ip cloudless", "table ip cloudless {"]
    assert doc.count("delete table ip cloudless") == 1
    assert delete_document() == (
        "table ip cloudless\ndelete table ip cloudless\n"
        "table bridge cloudless\ndelete table bridge cloudless\n"
    )


CASES = [
    # (services, lines that must appear)
    (
        [svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5", "10.42.3.5")],
        [
            # the chain is named after the VIP
            "elements = { 10.43.0.1 . tcp . 80 : goto vip_10_43_0_1 }",
            "chain vip_10_43_0_1 {",
            # 3 endpoints -> mod 3, arms 0..2, the port kept
            "dnat to numgen random mod 3 map { 0 : 10.42.1.5, 1 : 10.42.2.5, 2 : 10.42.3.5 } "
            'comment "web.default"',
        ],
    ),
    (
        [svc("dns", "10.43.0.10", "10.42.1.5", ports=(53,), proto="udp")],
        [
            "elements = { 10.43.0.10 . udp . 53 : goto vip_10_43_0_10 }",
            'dnat to 10.42.1.5 comment "dns.default"',  # one endpoint: no picker
        ],
    ),
    (
        [svc("db", "10.43.0.2", "10.42.1.5", "10.42.2.5", balance="source-hash")],
        ['dnat to jhash ip saddr mod 2 map { 0 : 10.42.1.5, 1 : 10.42.2.5 } comment "db.default"'],
    ),
    (
        # local-first on this device (CTX: 10.42.1.0/24), which serves the S3 API itself:
        # only its own endpoint (its bridge address)
        [svc("s3", "10.43.0.9", "10.42.1.1", "10.42.2.1", ns="system", balance="local-first")],
        ['dnat to 10.42.1.1 comment "s3.system"'],
    ),
    (
        # local-first on a device without an endpoint of its own: every endpoint, at random
        [svc("s3", "10.43.0.9", "10.42.2.1", "10.42.3.1", ns="system", balance="local-first")],
        ['dnat to numgen random mod 2 map { 0 : 10.42.2.1, 1 : 10.42.3.1 } comment "s3.system"'],
    ),
    (
        # no endpoints -> no chain, no DNAT, refused fast instead
        [svc("idle", "10.43.0.3")],
        [
            "elements = { 10.43.0.3 . tcp . 80 }",
            "meta l4proto tcp ip daddr . meta l4proto . th dport @no_endpoints "
            "reject with tcp reset",
        ],
    ),
    (
        # two ports -> two elements jumping to the service's one chain
        [svc("web", "10.43.0.1", "10.42.1.5", ports=(80, 443))],
        [
            "elements = { 10.43.0.1 . tcp . 80 : goto vip_10_43_0_1, "
            "10.43.0.1 . tcp . 443 : goto vip_10_43_0_1 }",
            'dnat to 10.42.1.5 comment "web.default"',
        ],
    ),
]


@pytest.mark.parametrize(("services", "want"), CASES)
def test_rendered_rules(services: list, want: list[str]) -> None:  # type: ignore[type-arg]
    doc = lines(render(CTX, services))
    for w in want:
        assert w in doc, w


def test_hooks_and_masquerade() -> None:
    doc = lines(render(CTX, []))
    assert "type nat hook prerouting priority dstnat; policy accept;" in doc
    assert "type nat hook output priority -100; policy accept;" in doc
    assert doc.count("ip daddr . meta l4proto . th dport vmap @services") == 2
    # hairpin: DNATed traffic from this device's subnet (slot 1) back into it
    assert "ct status dnat ip saddr 10.42.1.0/24 ip daddr 10.42.1.0/24 masquerade" in doc
    # only to destinations outside every cluster range
    assert (
        "ip saddr 10.42.0.0/16 ip daddr != { 10.42.0.0/16, 100.64.0.0/10, 10.43.0.0/16 } "
        "masquerade" in doc
    )
    assert sum("masquerade" in ln for ln in doc) == 2


def test_same_services_in_any_order_render_the_same() -> None:
    a = svc("a", "10.43.0.1", "10.42.1.5")
    b = svc("b", "10.43.0.2", "10.42.2.5", ns="other")
    assert render(CTX, [a, b]) == render(CTX, [b, a])


_BY_VIP = ["conntrack", "-D", "--orig-dst"]
STALE = [
    # (before, after, deletions)
    ([svc("w", "10.43.0.1", "10.42.1.5")], [svc("w", "10.43.0.1", "10.42.1.5")], []),
    (
        # an endpoint left on every port: one deletion for the (VIP, endpoint) pair
        [svc("w", "10.43.0.1", "10.42.1.5", "10.42.2.5", ports=(80, 443))],
        [svc("w", "10.43.0.1", "10.42.2.5", ports=(80, 443))],
        [[*_BY_VIP, "10.43.0.1", "--reply-src", "10.42.1.5"]],
    ),
    (
        # a port went, the endpoint stays on the other: that port's flows only
        [svc("w", "10.43.0.1", "10.42.1.5", ports=(80, 443))],
        [svc("w", "10.43.0.1", "10.42.1.5", ports=(80,))],
        [
            [
                *("conntrack", "-D", "-p", "tcp", "--orig-dst", "10.43.0.1"),
                *("--orig-port-dst", "443", "--reply-src", "10.42.1.5"),
            ]
        ],
    ),
    (
        [svc("w", "10.43.0.1", "10.42.1.5", ports=(53,), proto="udp")],
        [],  # service deleted: every endpoint's flows go
        [[*_BY_VIP, "10.43.0.1", "--reply-src", "10.42.1.5"]],
    ),
    ([], [svc("w", "10.43.0.1", "10.42.1.5")], []),  # new endpoints: nothing to flush
]


@pytest.mark.parametrize(("before", "after", "gone"), STALE)
def test_stale_conntrack(before: list, after: list, gone: list[list[str]]) -> None:  # type: ignore[type-arg]
    assert stale_conntrack(before, after) == gone


def test_isolation_between_containers_of_one_device() -> None:
    doc = lines(render(CTX, []))
    i = doc.index("table bridge cloudless {")
    assert doc[i - 2 : i] == ["table bridge cloudless", "delete table bridge cloudless"]
    assert "ip saddr 10.42.1.0/24 ip daddr 10.42.1.0/24 drop" in doc  # slot 1's subnet
    # ...except what was DNATed (VIP, published port): marked in the ip table, let through
    assert "ct status dnat meta mark set meta mark | 0x10000000" in doc
    accept = doc.index("meta mark & 0x10000000 == 0x10000000 accept")
    assert accept < doc.index("ip saddr 10.42.1.0/24 ip daddr 10.42.1.0/24 drop")
    off = lines(render(replace(CTX, isolate=False), []))
    assert "delete table bridge cloudless" in off  # an older isolation table goes too
    assert "table bridge cloudless {" not in off


def _expected(services: list) -> dict[str, list[str]]:  # type: ignore[type-arg]
    out: dict[str, list[str]] = {}
    for s in services:
        for p in s.spec.ports:
            out[f"{s.vip} {p.protocol} {p.port}"] = sorted(f"{e.ip}:{p.port}" for e in s.endpoints)
    return out


@st.composite
def service_sets(draw: st.DrawFn) -> list:  # type: ignore[type-arg]
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        ports = tuple(sorted(draw(st.sets(st.integers(1, 65535), min_size=1, max_size=3))))
        eps = sorted(draw(st.sets(st.integers(2, 250), max_size=4)))
        out.append(
            svc(
                f"s{i}",
                f"10.43.0.{i + 1}",
                *(f"10.42.{i}.{e}" for e in eps),
                ports=ports,
                proto=draw(st.sampled_from(["tcp", "udp"])),
                balance=draw(st.sampled_from(["random", "source-hash"])),
            )
        )
    return out


@given(service_sets())
async def test_render_then_read_back_is_the_service_table(services: list) -> None:  # type: ignore[type-arg]
    """Whatever the services, the programmed table (as the fake reads a rendered document)
    maps every VIP port to exactly its endpoints."""
    table = FakeNftTable()
    await table.apply(render(CTX, services))
    assert await table.programmed() == _expected(services)


WEB3 = svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5", "10.42.3.5")
WEB2 = svc("web", "10.43.0.1", "10.42.2.5", "10.42.3.5")
IDLE = svc("web", "10.43.0.1")
DB = svc("db", "10.43.0.2", "10.42.4.7", ports=(5432,))
_RULE3 = (
    "dnat to numgen random mod 3 map { 0 : 10.42.1.5, 1 : 10.42.2.5, 2 : 10.42.3.5 } "
    'comment "web.default"'
)
DELTAS = [
    # (before, after, the whole delta document's lines)
    ([WEB3, DB], [WEB3, DB], []),  # nothing changed: nothing sent
    (
        # one endpoint of web gone: only web's chain is rewritten; db is not mentioned
        [WEB3, DB],
        [WEB2, DB],
        [
            "flush chain ip cloudless vip_10_43_0_1",
            "add rule ip cloudless vip_10_43_0_1 dnat to numgen random mod 2 map "
            '{ 0 : 10.42.2.5, 1 : 10.42.3.5 } comment "web.default"',
        ],
    ),
    (
        # a new service: its chain, its rule, then the element jumping to it
        [WEB3],
        [WEB3, DB],
        [
            "add chain ip cloudless vip_10_43_0_2",
            'add rule ip cloudless vip_10_43_0_2 dnat to 10.42.4.7 comment "db.default"',
            "add element ip cloudless services { 10.43.0.2 . tcp . 5432 : goto vip_10_43_0_2 }",
        ],
    ),
    (
        # a service gone: its element first, then the chain nothing jumps to any more
        [WEB3, DB],
        [WEB3],
        [
            "delete element ip cloudless services { 10.43.0.2 . tcp . 5432 }",
            "delete chain ip cloudless vip_10_43_0_2",
        ],
    ),
    (
        # last endpoint gone: the VIP port moves to no_endpoints (refused fast), chain deleted
        [WEB3],
        [IDLE],
        [
            "delete element ip cloudless services { 10.43.0.1 . tcp . 80 }",
            "delete chain ip cloudless vip_10_43_0_1",
            "add element ip cloudless no_endpoints { 10.43.0.1 . tcp . 80 }",
        ],
    ),
    (
        # first endpoints of an idle service: out of no_endpoints, into services
        [IDLE],
        [WEB3],
        [
            "delete element ip cloudless no_endpoints { 10.43.0.1 . tcp . 80 }",
            "add chain ip cloudless vip_10_43_0_1",
            f"add rule ip cloudless vip_10_43_0_1 {_RULE3}",
            "add element ip cloudless services { 10.43.0.1 . tcp . 80 : goto vip_10_43_0_1 }",
        ],
    ),
    (
        # a port added, same endpoints: one element, the chain untouched
        [WEB3],
        [svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5", "10.42.3.5", ports=(80, 443))],
        ["add element ip cloudless services { 10.43.0.1 . tcp . 443 : goto vip_10_43_0_1 }"],
    ),
]


@pytest.mark.parametrize(("before", "after", "want"), DELTAS)
def test_delta_touches_only_what_changed(before: list, after: list, want: list[str]) -> None:  # type: ignore[type-arg]
    doc = render_delta(CTX, before, after)
    assert [ln for ln in doc.splitlines() if ln] == want


def test_two_services_claiming_one_vip_render_once() -> None:
    a = svc("a", "10.43.0.1", "10.42.1.5")
    b = svc("b", "10.43.0.1", "10.42.2.5")  # refused upstream; the first by key keeps the VIP
    doc = render(CTX, [b, a])
    assert doc.count("chain vip_10_43_0_1 {") == 1
    assert 'comment "a.default"' in doc and "b.default" not in doc


@given(service_sets(), service_sets())
async def test_delta_after_whole_table_is_the_whole_new_table(before: list, after: list) -> None:  # type: ignore[type-arg]
    """Whatever the two service tables, the table for ``before`` plus the delta programs exactly
    what the whole table for ``after`` programs."""
    table = FakeNftTable()
    await table.apply(render(CTX, before))
    delta = render_delta(CTX, before, after)
    if delta:
        await table.apply(delta)
    assert await table.programmed() == _expected(after)


async def test_fake_refuses_a_delta_for_another_table_and_keeps_its_own() -> None:
    table = FakeNftTable()
    await table.apply(render(CTX, [WEB3]))
    with pytest.raises(NetworkEdgeError, match="No such file"):
        await table.apply(render_delta(CTX, [WEB3, DB], [WEB3]))  # db was never programmed
    assert await table.programmed() == _expected([WEB3])
