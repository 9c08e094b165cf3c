"""DNS answers from the service table."""

from __future__ import annotations

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from cloudless.network.dns import DnsIndex
from tests.unit.network.builders import svc

INDEX = DnsIndex(
    [
        svc("web", "10.43.0.1", "10.42.1.5", "10.42.2.5", ports=(80, 443)),
        svc("db", "10.43.0.2", "10.42.1.7", "10.42.2.7", ports=(5432,), stateful=True),
        svc("web", "10.43.0.3", "10.42.3.5", ns="shop"),
        svc("s3", "10.43.0.9", "10.42.1.1", "10.42.2.1", ports=(3900,), ns="system"),
    ],
)

CASES = [
    # (name, type, client namespace, rcode, answers as "type data")
    ("web.default.cloudless", "A", None, RCODE.NOERROR, ["A 10.43.0.1"]),
    ("WEB.Default.Cloudless.", "A", None, RCODE.NOERROR, ["A 10.43.0.1"]),  # case-insensitive
    ("web.shop.cloudless", "A", None, RCODE.NOERROR, ["A 10.43.0.3"]),
    ("web", "A", "shop", RCODE.NOERROR, ["A 10.43.0.3"]),  # short name, asker's namespace
    ("web", "A", "default", RCODE.NOERROR, ["A 10.43.0.1"]),
    (
        "web.default.cloudless",
        "SRV",
        None,
        RCODE.NOERROR,
        ["SRV 0 100 80 web.default.cloudless.", "SRV 0 100 443 web.default.cloudless."],
    ),
    (
        "_443._tcp.web.default.cloudless",
        "SRV",
        None,
        RCODE.NOERROR,
        ["SRV 0 100 443 web.default.cloudless."],
    ),
    ("_443._udp.web.default.cloudless", "SRV", None, RCODE.NXDOMAIN, []),
    ("db-1.db.default.cloudless", "A", None, RCODE.NOERROR, ["A 10.42.2.7"]),  # stateful
    ("web-1.web.default.cloudless", "A", None, RCODE.NXDOMAIN, []),  # not stateful: no name
    ("nope.default.cloudless", "A", None, RCODE.NXDOMAIN, []),
    ("web.nope.cloudless", "A", None, RCODE.NXDOMAIN, []),
    ("web.default.cloudless", "AAAA", None, RCODE.NOERROR, []),  # exists, no IPv6: NODATA
    ("default.cloudless", "A", None, RCODE.NOERROR, []),  # empty non-terminal
    ("cloudless", "A", None, RCODE.NOERROR, []),
    ("s3.system.cloudless", "A", None, RCODE.NOERROR, ["A 10.43.0.9"]),  # the S3 service
    ("s3.cloudless", "A", None, RCODE.NOERROR, ["A 10.43.0.9"]),  # its alias (ZONE_ALIASES)
    ("S3.cloudless", "A", "shop", RCODE.NOERROR, ["A 10.43.0.9"]),  # same for every asker
    ("s3", "A", "default", RCODE.NXDOMAIN, []),  # one label: s3.default.cloudless, no service
]


def rendered(r: DNSRecord) -> list[str]:
    return sorted(f"{QTYPE[rr.rtype]} {rr.rdata}" for rr in r.rr)


@pytest.mark.parametrize(("name", "qtype", "ns", "rcode", "answers"), CASES)
def test_answers(name: str, qtype: str, ns: str | None, rcode: int, answers: list[str]) -> None:
    q = DNSRecord.question(name, qtype)
    r = INDEX.answer(q, ns)
    assert r is not None
    assert r.header.id == q.header.id
    assert r.header.rcode == rcode
    assert r.header.aa == 1
    assert rendered(r) == sorted(answers)


FORWARDED = [
    ("example.com", None),
    ("web", None),  # a short name without a known namespace is not ours
    ("cloudless.example.com", "default"),
    ("notcloudless", None),
]


@pytest.mark.parametrize(("name", "ns"), FORWARDED)
def test_outside_the_zone_is_forwarded(name: str, ns: str | None) -> None:
    assert INDEX.answer(DNSRecord.question(name, "A"), ns) is None


def test_srv_carries_the_target_address() -> None:
    r = INDEX.answer(DNSRecord.question("_5432._tcp.db.default.cloudless", "SRV"))
    assert r is not None
    assert [str(rr.rdata) for rr in r.ar] == ["10.43.0.2"]


def test_ttl_is_short() -> None:
    r = INDEX.answer(DNSRecord.question("web.default.cloudless", "A"))
    assert r is not None and r.rr[0].ttl == 5


def test_non_query_opcode_not_implemented() -> None:
    q = DNSRecord.question("web.default.cloudless", "A")
    q.header.opcode = 2  # STATUS
    r = INDEX.answer(q)
    assert r is not None and r.header.rcode == RCODE.NOTIMP


@pytest.mark.parametrize(("name", "qtype", "ns", "rcode", "answers"), CASES)
def test_fast_path_equals_dnslib_path(
    name: str, qtype: str, ns: str | None, rcode: int, answers: list[str]
) -> None:
    from cloudless.network.dns import FORWARD

    q = DNSRecord.question(name, qtype)
    fast = INDEX.fast(bytes(q.pack()), ns)
    if qtype not in ("A", "AAAA"):
        assert fast is None  # SRV and the rest take the dnslib path
        return
    assert fast not in (None, FORWARD)
    r = DNSRecord.parse(fast)
    slow = INDEX.answer(q, ns)
    assert slow is not None
    assert (r.header.id, r.header.rcode, r.header.aa, r.header.rd, r.header.ra) == (
        slow.header.id,
        slow.header.rcode,
        slow.header.aa,
        slow.header.rd,
        slow.header.ra,
    )
    assert rendered(r) == rendered(slow) == sorted(answers)
    assert str(r.q.qname) == str(q.q.qname)  # the question comes back as asked


FAST_DECLINES = [
    # (packet, why the fast path declines: None, or FORWARD for outside the zone)
    (b"\x00\x01", None),  # too short
    (bytes(DNSRecord.question("example.com", "A").pack()), b""),  # outside the zone: forward
    (bytes(DNSRecord.question("web.default.cloudless", "MX").pack()), None),
]


@pytest.mark.parametrize(("packet", "want"), FAST_DECLINES)
def test_fast_path_declines(packet: bytes, want: bytes | None) -> None:
    assert INDEX.fast(packet) == want


def test_fast_path_declines_a_reply_and_other_opcodes() -> None:
    q = DNSRecord.question("web.default.cloudless", "A")
    q.header.qr = 1
    assert INDEX.fast(bytes(q.pack())) is None
    q = DNSRecord.question("web.default.cloudless", "A")
    q.header.opcode = 2
    assert INDEX.fast(bytes(q.pack())) is None


_LABELS = st.sampled_from(["web", "WEB", "db", "db-1", "Db-0", "default", "shop", "nope", "x"])


@given(
    st.lists(_LABELS, min_size=1, max_size=4),
    st.sampled_from(["", ".cloudless", ".CLOUDLESS", ".example"]),
    st.sampled_from(["A", "AAAA"]),
    st.sampled_from([None, "default", "shop"]),
)
def test_fast_path_agrees_with_dnslib_on_any_name(
    labels: list[str], suffix: str, qtype: str, ns: str | None
) -> None:
    from cloudless.network.dns import FORWARD

    name = ".".join(labels) + suffix
    q = DNSRecord.question(name, qtype)
    fast = INDEX.fast(bytes(q.pack()), ns)
    slow = INDEX.answer(q, ns)
    if slow is None:
        assert fast == FORWARD
        return
    assert fast not in (None, FORWARD)
    r = DNSRecord.parse(fast)
    assert (r.header.rcode, rendered(r)) == (slow.header.rcode, rendered(slow))
