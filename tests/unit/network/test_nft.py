"""nftables rendering: what each service turns into, line by line."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.network.nft import delete_document, render, stale_conntrack
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
            "elements = { 10.43.0.1 . tcp . 80 : goto svc0_p0 }",
            # 3 endpoints -> mod 3, arms 0..2
            "numgen random mod 3 vmap { 0 : goto svc0_p0_e0, 1 : goto svc0_p0_e1, "
            "2 : goto svc0_p0_e2 }",
            "meta l4proto tcp dnat to 10.42.1.5:80",
            "meta l4proto tcp dnat to 10.42.3.5:80",
        ],
    ),
    (
        [svc("dns", "10.43.0.10", "10.42.1.5", ports=(53,), proto="udp")],
        [
            "elements = { 10.43.0.10 . udp . 53 : goto svc0_p0 }",
            "meta l4proto udp dnat to 10.42.1.5:53",
        ],
    ),
    (
        [svc("db", "10.43.0.2", "10.42.1.5", "10.42.2.5", balance="source-hash")],
        ["jhash ip saddr mod 2 vmap { 0 : goto svc0_p0_e0, 1 : goto svc0_p0_e1 }"],
    ),
    (
        # no endpoints -> no DNAT, refused fast instead
        [svc("idle", "10.43.0.3")],
        [
            "elements = { 10.43.0.3 . tcp . 80 }",
            "meta l4proto tcp ip daddr . meta l4proto . th dport @no_endpoints "
            "reject with tcp reset",
        ],
    ),
    (
        # two ports -> two chains, each with its own endpoints' DNAT
        [svc("web", "10.43.0.1", "10.42.1.5", ports=(80, 443))],
        ["meta l4proto tcp dnat to 10.42.1.5:80", "meta l4proto tcp dnat to 10.42.1.5:443"],
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


STALE = [
    # (before, after, deletions)
    ([svc("w", "10.43.0.1", "10.42.1.5")], [svc("w", "10.43.0.1", "10.42.1.5")], []),
    (
        [svc("w", "10.43.0.1", "10.42.1.5", "10.42.2.5")],
        [svc("w", "10.43.0.1", "10.42.2.5")],
        [["10.43.0.1", "tcp", "80", "10.42.1.5"]],
    ),
    (
        [svc("w", "10.43.0.1", "10.42.1.5", ports=(53,), proto="udp")],
        [],  # service deleted: every endpoint's flows go
        [["10.43.0.1", "udp", "53", "10.42.1.5"]],
    ),
    ([], [svc("w", "10.43.0.1", "10.42.1.5")], []),  # new endpoints: nothing to flush
]


@pytest.mark.parametrize(("before", "after", "gone"), STALE)
def test_stale_conntrack(before: list, after: list, gone: list[list[str]]) -> None:  # type: ignore[type-arg]
    got = stale_conntrack(before, after)
    assert [[a[5], a[3], a[7], a[9]] for a in got] == gone
    for a in got:
        assert a[:3] == ["conntrack", "-D", "-p"]


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
