"""Bucket CORS (``?cors``: Put, Get and DeleteBucketCors), so a web page on another origin
may call the store from a browser (an upload through a presigned URL, a download with
``fetch``): the rules in S3's XML, kept in the bucket record as canonical JSON, and the pure
decisions of which rule answers a request and with what headers.

S3's semantics: a rule matches when one of its ``AllowedOrigin``s matches the request's
``Origin`` (case-sensitive; one ``*`` wildcard each at most), the method (the preflight's
``Access-Control-Request-Method``) is one of its ``AllowedMethod``s, and, for a preflight,
every header of ``Access-Control-Request-Headers`` matches one of its ``AllowedHeader``s
(case-insensitive; one ``*`` each at most). The first matching rule answers. A preflight
(``OPTIONS``, not signed) that no rule allows is refused with ``AccessForbidden``; any other
request gets the CORS headers of its matching rule, or none.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from cloudless.objectstore.s3.errors import S3Error
from cloudless.objectstore.s3.xmlout import doc, el, items, parse, tag

log = logging.getLogger(__name__)
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100
MAX_AGE = 1 << 31
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token), ``*`` allowed as its wildcard."""


@dataclass(frozen=True)
class CorsRule:
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str = ""


def _wild(pattern: str, value: str, *, fold: bool) -> bool:
    """``pattern`` (at most one ``*``) matches ``value``."""
    if fold:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    head, _, tail = pattern.partition("*")
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def requested_headers(raw: str) -> list[str]:
    """``Access-Control-Request-Headers``: comma-separated names, empty ones dropped."""
    return [h.strip() for h in raw.split(",") if h.strip()]


def match(
    rules: Sequence[CorsRule], origin: str, method: str, headers: Sequence[str] = ()
) -> CorsRule | None:
    """The first rule allowing ``origin`` to make a ``method`` request with ``headers``."""
    for r in rules:
        if method not in r.methods:
            continue
        if not any(_wild(o, origin, fold=False) for o in r.origins):
            continue
        if all(any(_wild(a, h, fold=True) for a in r.headers) for h in headers):
            return r
    return None


def answer_headers(rule: CorsRule, origin: str) -> dict[str, str]:
    """The CORS headers of a response to an ``origin`` that ``rule`` allows (S3's: the
    origin echoed, or ``*`` for a rule allowing any origin; credentials allowed but for
    ``*``)."""
    anyone = "*" in rule.origins
    out = {
        "Access-Control-Allow-Origin": "*" if anyone else origin,
        "Access-Control-Allow-Methods": ", ".join(rule.methods),
        "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if not anyone:
        out["Access-Control-Allow-Credentials"] = "true"
    if rule.expose:
        out["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    if rule.max_age is not None:
        out["Access-Control-Max-Age"] = str(rule.max_age)
    return out


def preflight(
    rules: Sequence[CorsRule], request: Mapping[str, str], resource: str
) -> dict[str, str]:
    """The headers of the answer to a preflight (``request``: its headers, lowercase names);
    raises the S3 refusal when it lacks what a preflight carries or no rule allows it."""
    origin = request.get("origin")
    method = request.get("access-control-request-method")
    if not origin:
        raise S3Error("InvalidRequest", "a CORS preflight needs an Origin header")
    if not method:
        raise S3Error(
            "InvalidRequest", "a CORS preflight needs an Access-Control-Request-Method header"
        )
    asked = requested_headers(request.get("access-control-request-headers", ""))
    rule = match(rules, origin, method, asked)
    if rule is None:
        raise S3Error(
            "AccessForbidden",
            f"CORS: no rule of this bucket allows origin {origin!r} to send {method}"
            + (f" with headers {', '.join(asked)}" if asked else ""),
            resource=resource,
        )
    out = answer_headers(rule, origin)
    if asked:
        out["Access-Control-Allow-Headers"] = ", ".join(asked)
    return out


# ---- the XML and the record ------------------------------------------------------------------


def parse_cors(body: bytes) -> tuple[CorsRule, ...]:
    root = parse(body, "CORSConfiguration")
    nodes = items(root, "CORSRule", most=MAX_RULES, too_many="InvalidRequest", what="CORS rules")
    return tuple(_rule(node, n) for n, node in enumerate(nodes, 1))


def _rule(node: ET.Element, n: int) -> CorsRule:
    lists: dict[str, list[str]] = {
        "AllowedOrigin": [], "AllowedMethod": [], "AllowedHeader": [], "ExposeHeader": []
    }  # fmt: skip
    single: dict[str, str] = {}
    for c in node:
        t = tag(c)
        text = (c.text or "").strip()
        if t in lists:
            lists[t].append(text)
        elif t in ("ID", "MaxAgeSeconds"):
            if t in single:
                raise S3Error("MalformedXML", f"CORS rule {n}: <{t}> given twice")
            single[t] = text
        else:
            raise S3Error("MalformedXML", f"CORS rule {n}: unexpected element <{t}>")
    where = f"CORS rule {single.get('ID') or n}"
    for need in ("AllowedOrigin", "AllowedMethod"):
        if not lists[need]:
            raise S3Error("MalformedXML", f"{where}: at least one <{need}> is required")
    for m in lists["AllowedMethod"]:
        if m not in METHODS:
            raise S3Error(
                "InvalidRequest",
                f"{where}: method {m!r} is not one CORS allows here ({', '.join(METHODS)})",
            )
    for o in lists["AllowedOrigin"]:
        if not o or o.count("*") > 1:
            raise S3Error(
                "InvalidRequest", f"{where}: origin {o!r} must be non-empty with at most one '*'"
            )
    for h in lists["AllowedHeader"]:
        if h.count("*") > 1 or not _TOKEN.match(h):
            raise S3Error(
                "InvalidRequest", f"{where}: allowed header {h!r} is not a header name (one '*')"
            )
    for h in lists["ExposeHeader"]:
        if not _TOKEN.match(h) or "*" in h:
            raise S3Error("InvalidRequest", f"{where}: expose header {h!r} is not a header name")
    max_age = None
    if "MaxAgeSeconds" in single:
        raw = single["MaxAgeSeconds"]
        if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_AGE:
            raise S3Error(
                "InvalidRequest", f"{where}: MaxAgeSeconds {raw[:40]!r} must be 0..{MAX_AGE}"
            )
        max_age = int(raw)
    rid = single.get("ID", "")
    if len(rid) > 255:
        raise S3Error("InvalidRequest", f"CORS rule {n}: <ID> is over 255 characters")
    return CorsRule(
        tuple(lists["AllowedOrigin"]),
        tuple(dict.fromkeys(lists["AllowedMethod"])),
        tuple(lists["AllowedHeader"]),
        tuple(lists["ExposeHeader"]),
        max_age,
        rid,
    )


def render_cors(rules: Sequence[CorsRule]) -> bytes:
    parts = []
    for r in rules:
        body = el("ID", r.id) if r.id else ""
        body += "".join(el("AllowedOrigin", o) for o in r.origins)
        body += "".join(el("AllowedMethod", m) for m in r.methods)
        body += "".join(el("AllowedHeader", h) for h in r.headers)
        body += "".join(el("ExposeHeader", h) for h in r.expose)
        if r.max_age is not None:
            body += el("MaxAgeSeconds", r.max_age)
        parts.append("<CORSRule>" + body + "</CORSRule>")
    return doc("CORSConfiguration", *parts)


def encode(rules: Sequence[CorsRule]) -> str:
    """The canonical JSON kept in the bucket record ("" for none)."""
    if not rules:
        return ""
    return json.dumps([asdict(r) for r in rules], sort_keys=True, separators=(",", ":"))


def decode(raw: str) -> tuple[CorsRule, ...]:
    """Rules from a bucket record; one that does not decode has none (logged): a damaged
    record allows no origin."""
    if not raw:
        return ()
    try:
        return tuple(
            CorsRule(
                tuple(d["origins"]),
                tuple(d["methods"]),
                tuple(d["headers"]),
                tuple(d["expose"]),
                d["max_age"],
                d["id"],
            )
            for d in json.loads(raw)
        )
    except (ValueError, TypeError, KeyError) as e:
        log.warning("bucket CORS rules do not decode (ignored): %s", e)
        return ()
