"""Property: every valid SpiffeId survives uri -> parse unchanged, and parse never crashes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cloudless.security.errors import InvalidSpiffeId
from cloudless.security.identity import CertKind, SpiffeId

td = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=40)
name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_",
    min_size=1,
    max_size=60,
).filter(lambda s: s not in (".", ".."))


@given(td, st.sampled_from(list(CertKind)), name)
def test_uri_parse_roundtrip(trust_domain: str, kind: CertKind, n: str) -> None:
    sid = SpiffeId(trust_domain, kind, n)
    assert SpiffeId.parse(sid.uri) == sid


@given(st.text(max_size=80))
def test_parse_either_succeeds_or_raises_invalid(raw: str) -> None:
    try:
        sid = SpiffeId.parse(raw)
    except InvalidSpiffeId as exc:
        assert str(exc)
    else:
        assert sid.uri == raw
