"""Bucket lifecycle rules: the XML S3 clients send (good and bad documents as tables), what
the rules decide (due times, filters, the acting node), and how they are kept."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.objectstore import lifecycle as lc
from cloudless.objectstore.layout import PARTITIONS, LayoutVersion, NodeRole
from cloudless.objectstore.lifecycle import Rule
from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.lifecycle_xml import parse_rules, render_rules

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def doc(*rules: str) -> bytes:
    return f"<LifecycleConfiguration {NS}>{''.join(rules)}</LifecycleConfiguration>".encode()


def rule(body: str, status: str = "Enabled") -> str:
    return f"<Rule>{body}<Status>{status}</Status></Rule>"


EXP7 = "<Expiration><Days>7</Days></Expiration>"
MIDNIGHT_2030 = int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp())

GOOD = [
    # (document, the rules it gives)
    (doc(rule("<ID>a</ID><Filter><Prefix>logs/</Prefix></Filter>" + EXP7)),
     (Rule("a", True, "logs/", expire_days=7),)),
    (doc(rule("<ID>a</ID><Filter></Filter>" + EXP7)), (Rule("a", True, expire_days=7),)),
    (doc(rule("<ID>a</ID><Filter/>" + EXP7, "Disabled")), (Rule("a", False, expire_days=7),)),
    (doc(rule("<ID>a</ID><Prefix>old/</Prefix>" + EXP7)),  # the older form, Prefix in Rule
     (Rule("a", True, "old/", expire_days=7),)),
    (doc(rule(EXP7)), (Rule("rule-1", True, expire_days=7),)),  # no ID: one is given
    (doc(rule("<ID>d</ID><Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration>")),
     (Rule("d", True, expire_date=MIDNIGHT_2030),)),
    (doc(rule("<ID>d</ID><Expiration><Date>2030-01-01</Date></Expiration>")),
     (Rule("d", True, expire_date=MIDNIGHT_2030),)),
    (doc(rule("<ID>u</ID><AbortIncompleteMultipartUpload><DaysAfterInitiation> 3 "
              "</DaysAfterInitiation></AbortIncompleteMultipartUpload>")),
     (Rule("u", True, abort_days=3),)),
    (doc(rule("<ID>s</ID><Filter><ObjectSizeGreaterThan>100</ObjectSizeGreaterThan></Filter>"
              + EXP7)), (Rule("s", True, size_gt=100, expire_days=7),)),
    (doc(rule("<ID>s</ID><Filter><And><Prefix>p/</Prefix><ObjectSizeGreaterThan>1"
              "</ObjectSizeGreaterThan><ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>"
              + EXP7)), (Rule("s", True, "p/", 1, 9, expire_days=7),)),
    (doc(rule("<ID>a</ID>" + EXP7), rule("<ID>b</ID><AbortIncompleteMultipartUpload>"
         "<DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>")),
     (Rule("a", True, expire_days=7), Rule("b", True, abort_days=1))),
]  # fmt: skip


@pytest.mark.parametrize(("body", "want"), GOOD)
def test_good_documents(body: bytes, want: tuple[Rule, ...]) -> None:
    assert parse_rules(body) == want
    assert parse_rules(render_rules(want)) == want  # what GET answers reads back the same


BAD = [
    # (document, S3 code, what the message names)
    (b"<LifecycleConfiguration", "MalformedXML", "does not parse"),
    (b"<Other/>", "MalformedXML", "<LifecycleConfiguration>"),
    (doc(), "MalformedXML", "no <Rule>"),
    (doc("<Bogus/>"), "MalformedXML", "<Bogus>"),
    (doc("<Rule><ID>a</ID>" + EXP7 + "</Rule>"), "MalformedXML", "<Status> is required"),
    (doc(rule("<ID>a</ID>" + EXP7, "On")), "MalformedXML", "Enabled or Disabled"),
    (doc(rule("<ID>a</ID>")), "InvalidArgument", "no action"),
    (doc(rule("<ID>a</ID><ID>b</ID>" + EXP7)), "MalformedXML", "<ID> given twice"),
    (doc(rule("<ID>a</ID>" + EXP7), rule("<ID>a</ID>" + EXP7)), "InvalidArgument", "used twice"),
    (doc(rule("<ID>" + "x" * 256 + "</ID>" + EXP7)), "InvalidArgument", "1..255"),
    (doc(rule("<ID>a</ID><Expiration><Days>0</Days></Expiration>")), "InvalidArgument",
     "1..100000"),
    (doc(rule("<ID>a</ID><Expiration><Days>-3</Days></Expiration>")), "InvalidArgument",
     "not a whole number"),
    (doc(rule("<ID>a</ID><Expiration><Days>1e9</Days></Expiration>")), "InvalidArgument",
     "not a whole number"),
    (doc(rule("<ID>a</ID><Expiration><Days>" + "9" * 400 + "</Days></Expiration>")),
     "InvalidArgument", "1..100000"),
    (doc(rule("<ID>a</ID><Expiration><Days>\u0661</Days></Expiration>")), "InvalidArgument",
     "not a whole number"),  # an Arabic-Indic digit: isdigit() but not a number S3 reads
    (doc(rule("<ID>a</ID><Expiration/>")), "MalformedXML", "exactly one of"),
    (doc(rule("<ID>a</ID><Expiration><Days>1</Days><Date>2030-01-01</Date></Expiration>")),
     "MalformedXML", "exactly one of"),
    (doc(rule("<ID>a</ID><Expiration><Date>2030-01-01T12:00:00Z</Date></Expiration>")),
     "InvalidArgument", "midnight UTC"),
    (doc(rule("<ID>a</ID><Expiration><Date>soon</Date></Expiration>")), "InvalidArgument",
     "ISO 8601"),
    (doc(rule("<ID>a</ID><Filter/><Prefix>x</Prefix>" + EXP7)), "MalformedXML", "not both"),
    (doc(rule("<ID>a</ID><Filter><Prefix>a</Prefix><ObjectSizeLessThan>5</ObjectSizeLessThan>"
              "</Filter>" + EXP7)), "MalformedXML", "need an <And>"),
    (doc(rule("<ID>a</ID><Filter><And><ObjectSizeGreaterThan>9</ObjectSizeGreaterThan>"
              "<ObjectSizeLessThan>9</ObjectSizeLessThan></And></Filter>" + EXP7)),
     "InvalidArgument", "must be below"),
    (doc(rule("<ID>a</ID><Filter><And><Prefix>a</Prefix></And><Prefix>b</Prefix></Filter>"
              + EXP7)), "MalformedXML", "only condition"),
    (doc(rule("<ID>a</ID><AbortIncompleteMultipartUpload/>")), "MalformedXML",
     "DaysAfterInitiation"),
    (doc(rule("<ID>a</ID><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass>"
              "</Transition>")), "NotImplemented", "transitions"),
    (doc(rule("<ID>a</ID><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays>"
              "</NoncurrentVersionExpiration>")), "NotImplemented", "noncurrent"),
    (doc(rule("<ID>a</ID><Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter>" + EXP7)),
     "NotImplemented", "tag filters"),
    (doc(rule("<ID>a</ID><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker>"
              "</Expiration>")), "NotImplemented", "delete-marker"),
    (doc(*[rule(f"<ID>r{i}</ID>" + EXP7) for i in range(1001)]), "InvalidArgument",
     "more than 1000"),
    (doc(rule("<ID>a</ID><Filter>" + "<And>" * 200 + "</And>" * 200 + "</Filter>" + EXP7)),
     "MalformedXML", "<And>"),  # deep nesting: refused at the second level
]  # fmt: skip


@pytest.mark.parametrize(("body", "code", "names"), BAD)
def test_bad_documents(body: bytes, code: str, names: str) -> None:
    with pytest.raises(S3Error) as e:
        parse_rules(body)
    assert e.value.code == code
    assert names in e.value.message


DAY = 86400
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
MID0 = (int(T0) // DAY + 1) * DAY  # the midnight after T0

DUE = [
    # (rule, key, size, written at, now, due?)
    (Rule("a", True, expire_days=1), "k", 1, T0, MID0 + DAY - 1, False),
    (Rule("a", True, expire_days=1), "k", 1, T0, MID0 + DAY, True),  # +1 day, up to midnight
    (Rule("a", True, expire_days=1), "k", 1, float(MID0), MID0 + DAY, True),  # on a midnight
    (Rule("a", False, expire_days=1), "k", 1, T0, MID0 + 9 * DAY, False),  # disabled
    (Rule("a", True, "logs/", expire_days=1), "data/x", 1, T0, MID0 + 9 * DAY, False),
    (Rule("a", True, "logs/", expire_days=1), "logs/x", 1, T0, MID0 + 9 * DAY, True),
    (Rule("a", True, size_gt=10, expire_days=1), "k", 10, T0, MID0 + 9 * DAY, False),  # strict
    (Rule("a", True, size_gt=10, expire_days=1), "k", 11, T0, MID0 + 9 * DAY, True),
    (Rule("a", True, size_lt=10, expire_days=1), "k", 10, T0, MID0 + 9 * DAY, False),
    (Rule("a", True, expire_date=MID0), "k", 1, T0 + 30 * DAY, MID0 - 1, False),
    (Rule("a", True, expire_date=MID0), "k", 1, T0 + 30 * DAY, MID0, True),  # any write time
    (Rule("a", True, abort_days=1), "k", 1, T0, MID0 + 9 * DAY, False),  # uploads only
]


@pytest.mark.parametrize(("r", "key", "size", "mtime", "now", "due"), DUE)
def test_when_objects_are_due(
    r: Rule, key: str, size: int, mtime: float, now: float, due: bool
) -> None:
    assert (lc.object_due([r], key, size, mtime, now) == r.id) is due


UPLOADS = [
    # (rule, key, opened at, now, due?)
    (Rule("u", True, abort_days=2), "k", T0, MID0 + 2 * DAY - 1, False),
    (Rule("u", True, abort_days=2), "k", T0, MID0 + 2 * DAY, True),
    (Rule("u", True, "tmp/", abort_days=2), "k", T0, MID0 + 9 * DAY, False),
    (Rule("u", True, "tmp/", size_gt=5, abort_days=2), "tmp/k", T0, MID0 + 9 * DAY, True),
    (Rule("u", False, abort_days=2), "k", T0, MID0 + 9 * DAY, False),
    (Rule("u", True, expire_days=1), "k", T0, MID0 + 9 * DAY, False),  # objects only
]


@pytest.mark.parametrize(("r", "key", "opened", "now", "due"), UPLOADS)
def test_when_uploads_are_due(r: Rule, key: str, opened: float, now: float, due: bool) -> None:
    assert (lc.upload_due([r], key, opened, now) == r.id) is due


def layout(owners: tuple[str, ...]) -> LayoutVersion:
    roles = {n: NodeRole(f"z{n}", 1) for n in owners}
    return LayoutVersion(1, len(owners), roles, tuple(owners for _ in range(PARTITIONS)))


ACTING = [
    # (owners of the partition, silent nodes, acting node)
    (("n2", "n1", "n3"), set(), "n2"),  # the layout's order, not the names'
    (("n2", "n1", "n3"), {"n2"}, "n1"),
    (("n2", "n1", "n3"), {"n2", "n1", "n3"}, None),
]


@pytest.mark.parametrize(("owners", "silent", "want"), ACTING)
def test_acting_node(owners: tuple[str, ...], silent: set[str], want: str | None) -> None:
    assert lc.acting_node(layout(owners), 7, silent) == want
    assert lc.acting_node(None, 7, silent) is None


def test_the_prefixes_listed_cover_every_rule_once() -> None:
    assert lc._prefixes(["logs/a/", "logs/", "data/", "logs/"]) == ["data/", "logs/"]
    assert lc._prefixes(["", "x"]) == [""]


XML_TEXT = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Co"))
rules_st = st.builds(
    Rule,
    id=st.text(XML_TEXT, min_size=1, max_size=20),
    enabled=st.booleans(),
    prefix=st.text(XML_TEXT, max_size=10),
    expire_days=st.integers(1, lc.MAX_DAYS),
    abort_days=st.none() | st.integers(1, lc.MAX_DAYS),
)  # fmt: skip


@given(st.lists(rules_st, min_size=1, max_size=5, unique_by=lambda r: r.id))
def test_rules_round_trip_through_xml_and_the_bucket_record(rules: list[Rule]) -> None:
    t = tuple(rules)
    assert parse_rules(render_rules(t)) == t
    assert lc.decode(lc.encode(t)) == t


@pytest.mark.parametrize("raw", ["{", "[1]", '[{"id": "a"}]', '[{"nope": 1}]'])
def test_a_damaged_record_has_no_rules(raw: str) -> None:
    assert lc.decode(raw) == ()
