"""Bucket CORS rules (``s3/cors.py``): good and bad ``CORSConfiguration`` documents, which rule
answers a request, and the headers of a preflight's answer, as tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.objectstore.s3 import cors
from cloudless.objectstore.s3.cors import CorsRule
from cloudless.objectstore.s3.errors import S3Error

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def doc(*rules: str) -> bytes:
    return f"<CORSConfiguration {NS}>{''.join(rules)}</CORSConfiguration>".encode()


def rule(*parts: str) -> str:
    return "<CORSRule>" + "".join(parts) + "</CORSRule>"


ORIGIN = "<AllowedOrigin>{}</AllowedOrigin>"
G = "<AllowedMethod>GET</AllowedMethod>"
P = "<AllowedMethod>PUT</AllowedMethod>"

GOOD = [
    (doc(rule(ORIGIN.format("https://app.example"), G)),
     (CorsRule(("https://app.example",), ("GET",)),)),
    (doc(rule("<ID>web</ID>", ORIGIN.format("*"), G, P, "<AllowedHeader>*</AllowedHeader>",
              "<ExposeHeader>ETag</ExposeHeader>", "<MaxAgeSeconds>3000</MaxAgeSeconds>")),
     (CorsRule(("*",), ("GET", "PUT"), ("*",), ("ETag",), 3000, "web"),)),
    (doc(rule(ORIGIN.format("http://*.home.example"), G, G)),  # a repeated method kept once
     (CorsRule(("http://*.home.example",), ("GET",)),)),
]  # fmt: skip


@pytest.mark.parametrize(("body", "want"), GOOD)
def test_good_documents(body: bytes, want: tuple[CorsRule, ...]) -> None:
    assert cors.parse_cors(body) == want
    assert cors.parse_cors(cors.render_cors(want)) == want


BAD = [
    # (document, S3 code, what the message names)
    (b"<CORSConfiguration><CORSRule>", "MalformedXML", "does not parse"),
    (doc(), "MalformedXML", "no <CORSRule>"),
    (doc("<Rule/>"), "MalformedXML", "<Rule>"),
    (doc(rule(G)), "MalformedXML", "<AllowedOrigin> is required"),
    (doc(rule(ORIGIN.format("*"))), "MalformedXML", "<AllowedMethod> is required"),
    (doc(rule(ORIGIN.format("*"), "<AllowedMethod>PATCH</AllowedMethod>")), "InvalidRequest",
     "'PATCH'"),
    (doc(rule(ORIGIN.format("https://*.*.example"), G)), "InvalidRequest", "at most one '*'"),
    (doc(rule(ORIGIN.format(""), G)), "InvalidRequest", "non-empty"),
    (doc(rule(ORIGIN.format("*"), G, "<AllowedHeader>x y</AllowedHeader>")), "InvalidRequest",
     "'x y'"),
    (doc(rule(ORIGIN.format("*"), G, "<ExposeHeader>*</ExposeHeader>")), "InvalidRequest",
     "expose header"),
    (doc(rule(ORIGIN.format("*"), G, "<MaxAgeSeconds>-1</MaxAgeSeconds>")), "InvalidRequest",
     "MaxAgeSeconds"),
    (doc(rule(ORIGIN.format("*"), G, "<MaxAgeSeconds>" + "9" * 300 + "</MaxAgeSeconds>")),
     "InvalidRequest", "MaxAgeSeconds"),
    (doc(rule(ORIGIN.format("*"), G, "<MaxAgeSeconds>1</MaxAgeSeconds>" * 2)), "MalformedXML",
     "given twice"),
    (doc(rule(ORIGIN.format("*"), G, "<Bogus/>")), "MalformedXML", "<Bogus>"),
    (doc(rule("<ID>" + "i" * 256 + "</ID>", ORIGIN.format("*"), G)), "InvalidRequest", "255"),
    (doc(*[rule(ORIGIN.format("*"), G)] * 101), "InvalidRequest", "more than 100"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "code", "names"), BAD)
def test_bad_documents(body: bytes, code: str, names: str) -> None:
    with pytest.raises(S3Error) as e:
        cors.parse_cors(body)
    assert e.value.code == code and names in e.value.message


RULES = (
    CorsRule(("https://app.example",), ("GET", "PUT"), ("content-type", "x-amz-*"), ("ETag",)),
    CorsRule(("http://*.home.example",), ("GET",)),
    CorsRule(("*",), ("HEAD",)),
)

MATCH = [
    # (origin, method, requested headers, index of the answering rule or None)
    ("https://app.example", "PUT", [], 0),
    ("https://app.example", "PUT", ["Content-Type", "X-Amz-Date"], 0),  # case-insensitive
    ("https://app.example", "PUT", ["Authorization"], None),  # a header no rule allows
    ("https://app.example", "DELETE", [], None),
    ("https://APP.example", "GET", [], None),  # origins are case-sensitive
    ("http://nas.home.example", "GET", [], 1),
    ("http://home.example", "GET", [], None),  # the wildcard needs its dot
    ("https://evil.example", "HEAD", [], 2),
    ("https://evil.example", "GET", [], None),
]


@pytest.mark.parametrize(("origin", "method", "headers", "want"), MATCH)
def test_which_rule_answers(origin: str, method: str, headers: list[str], want: int | None) -> None:
    got = cors.match(RULES, origin, method, headers)
    assert got is (None if want is None else RULES[want])


def test_preflight_answers() -> None:
    h = cors.preflight(
        RULES,
        {
            "origin": "https://app.example",
            "access-control-request-method": "PUT",
            "access-control-request-headers": "content-type, x-amz-meta-a",
        },
        "/b/k",
    )
    assert h["Access-Control-Allow-Origin"] == "https://app.example"
    assert h["Access-Control-Allow-Methods"] == "GET, PUT"
    assert h["Access-Control-Allow-Headers"] == "content-type, x-amz-meta-a"
    assert h["Access-Control-Expose-Headers"] == "ETag"
    assert h["Access-Control-Allow-Credentials"] == "true" and "Origin" in h["Vary"]
    anyone = cors.preflight(
        RULES, {"origin": "https://x.example", "access-control-request-method": "HEAD"}, "/b"
    )
    assert anyone["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in anyone


REFUSED = [
    # (request headers, S3 code, what the message names)
    ({"access-control-request-method": "GET"}, "InvalidRequest", "Origin"),
    ({"origin": "https://app.example"}, "InvalidRequest", "Access-Control-Request-Method"),
    ({"origin": "https://app.example", "access-control-request-method": "DELETE"},
     "AccessForbidden", "'https://app.example' to send DELETE"),
    ({"origin": "https://app.example", "access-control-request-method": "PUT",
      "access-control-request-headers": "authorization"}, "AccessForbidden", "authorization"),
]  # fmt: skip


@pytest.mark.parametrize(("headers", "code", "names"), REFUSED)
def test_refused_preflights(headers: dict[str, str], code: str, names: str) -> None:
    with pytest.raises(S3Error) as e:
        cors.preflight(RULES, headers, "/b/k")
    assert e.value.code == code and names in e.value.message


@given(st.lists(st.sampled_from(RULES), min_size=1, max_size=4))
def test_rules_round_trip_through_the_bucket_record(rules: list[CorsRule]) -> None:
    assert cors.decode(cors.encode(rules)) == tuple(rules)


@pytest.mark.parametrize("raw", ["{", "[1]", '[{"origins": ["*"]}]'])
def test_a_damaged_record_allows_nothing(raw: str) -> None:
    assert cors.decode(raw) == ()
