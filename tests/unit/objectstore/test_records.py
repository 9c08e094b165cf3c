"""Object records: the JSON head and the raw inline body after it, checked against the ETag;
the records written before bodies followed the head (base64 in ``"i"``); ``listed``, the head
a listing reads; the checked records held in memory."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.objectstore.records import (
    BODIES,
    BlockRef,
    CorruptRecord,
    ObjectMeta,
    _Bodies,
    listed,
)

HEAD = ObjectMeta(version="v1", size=5, etag="e" * 32, mtime=1.5, user_meta={"x-amz-meta-a": "b"})


def rec(**changes: object) -> ObjectMeta:
    """``HEAD`` changed, with the ETag a single PUT of its body would have."""
    obj = replace(HEAD, **changes)  # type: ignore[arg-type]
    if obj.inline is not None:
        obj = replace(obj, size=len(obj.inline), etag=hashlib.md5(obj.inline).hexdigest())
    return obj


def legacy(obj: ObjectMeta) -> bytes:
    """``obj`` as records were written before bodies followed the head."""
    d = json.loads(replace(obj, inline=None).encode())
    if obj.inline is not None:
        d["i"] = base64.b64encode(obj.inline).decode()
    return json.dumps(d, separators=(",", ":")).encode()


CASES = [
    # (name, record)
    ("no body (blocks)", rec(blocks=(BlockRef("ab", 5),))),
    ("a body", rec(inline=b"hello")),
    ("an empty body", rec(inline=b"")),
    ("a body of NULs", rec(inline=b"\0\0\0\0\0")),
    ("a NUL in metadata", rec(user_meta={"x-amz-meta-a": "\0"}, inline=b"\0z")),
    ("a multipart ETag (not checked)", replace(HEAD, etag="abc-2", inline=b"xyz")),
]


@pytest.mark.parametrize(("name", "obj"), CASES, ids=[c[0] for c in CASES])
def test_round_trip_and_listing(name: str, obj: ObjectMeta) -> None:
    raw = obj.encode()
    assert ObjectMeta.decode(raw) == obj
    assert ObjectMeta.decode(bytes(raw)) == obj, "the same bytes in another object"
    assert ObjectMeta.decode(legacy(obj)) == obj, "a record in the earlier format still reads"
    for form in (raw, legacy(obj)):
        for head in (ObjectMeta.decode(listed(form)), ObjectMeta.head(form)):
            assert head == replace(obj, inline=None)
        assert listed(listed(form)) == listed(form)


def test_a_body_is_stored_raw_after_the_head() -> None:
    body = bytes(range(256)) * 16
    raw = rec(inline=body).encode()
    assert raw.endswith(b"\0" + body)
    assert len(raw) < len(body) + 200


DAMAGED = [
    # (name, what happens to the stored record's bytes)
    ("a flipped byte in the body", lambda raw: raw[:-1] + bytes([raw[-1] ^ 1])),
    ("a body cut short", lambda raw: raw[:-1]),
    ("a body grown", lambda raw: raw + b"x"),
]


@pytest.mark.parametrize(("name", "damage"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_body_is_refused_naming_the_version(name: str, damage: object) -> None:
    obj = rec(version="damaged1", inline=b"hello world")
    raw = obj.encode()
    bad = damage(raw)  # type: ignore[operator]
    with pytest.raises(CorruptRecord, match="damaged1: its inline body does not match"):
        ObjectMeta.decode(bad)
    assert ObjectMeta.head(bad).etag == obj.etag, "its head still reads (listings, releases)"
    assert ObjectMeta.decode(raw) == obj


def test_checked_records_are_held_and_shared() -> None:
    """A record encoded here, or decoded and checked, is answered from memory: the same
    object, with no second check."""
    obj = rec(version="held1", inline=b"held body")
    raw = obj.encode()
    assert ObjectMeta.decode(raw) is obj, "held since it was encoded"
    again = bytes(raw)  # equal bytes: the same key
    assert ObjectMeta.decode(again) is obj
    plain = HEAD.encode()
    assert ObjectMeta.decode(plain) is ObjectMeta.decode(plain)


def test_held_bodies_stay_within_their_budget() -> None:
    bodies = _Bodies(budget=10_000)
    records = [rec(version=f"b{i}", inline=bytes([i]) * 1000) for i in range(10)]
    for r in records:
        bodies.keep(r.encode(), r)
    assert bodies._bytes <= 10_000
    held = [r for r in records if bodies.get(r.encode()) is r]
    assert held == records[-len(held) :] and 2 <= len(held) < 10, "the oldest dropped"
    huge = rec(version="huge", inline=bytes(20_000))
    bodies.keep(huge.encode(), huge)
    assert bodies.get(huge.encode()) is None, "a record over the whole budget is not held"
    assert BODIES.budget > 0


metadata = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    body=st.none() | st.binary(max_size=64),
    meta=metadata,
    checksums=metadata,
    content_type=st.text(max_size=10),
    parts=st.integers(0, 10_000),
)
def test_any_record_round_trips(
    body: bytes | None,
    meta: dict[str, str],
    checksums: dict[str, str],
    content_type: str,
    parts: int,
) -> None:
    obj = rec(
        content_type=content_type,
        user_meta=meta,
        inline=body,
        checksums=checksums,
        parts=parts,
    )
    assert ObjectMeta.decode(obj.encode()) == obj
    assert ObjectMeta.decode(legacy(obj)) == obj
    assert ObjectMeta.decode(listed(obj.encode())) == replace(obj, inline=None)
