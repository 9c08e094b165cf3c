"""The ``?lifecycle`` XML of S3 (``LifecycleConfiguration``) to and from ``lifecycle.Rule``s.

Every refusal names the rule and the element: ``MalformedXML`` for a document S3 itself
would not parse, ``InvalidArgument`` for a value out of range, ``NotImplemented`` for what
this store does not do (storage-class transitions, noncurrent versions, delete markers, tag
filters: an unversioned store with one storage class and no tags).
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from cloudless.objectstore.lifecycle import DAY_S, MAX_DAYS, MAX_ID, MAX_RULES, Rule
from cloudless.objectstore.s3.errors import S3Error, not_implemented
from cloudless.objectstore.s3.xmlout import doc, el, items, parse, tag

UNSUPPORTED = {
    "Transition": "lifecycle transitions (this store has one storage class)",
    "NoncurrentVersionExpiration": "lifecycle noncurrent-version expiry (no versions kept)",
    "NoncurrentVersionTransition": "lifecycle noncurrent-version transitions",
    "Tag": "lifecycle tag filters (objects have no tags)",
    "ExpiredObjectDeleteMarker": "lifecycle delete-marker expiry (buckets are unversioned)",
}


def _only(node: ET.Element, allowed: set[str], where: str) -> dict[str, ET.Element]:
    """``node``'s children by tag: each at most once, each known."""
    out: dict[str, ET.Element] = {}
    for c in node:
        t = tag(c)
        if t in UNSUPPORTED:
            raise not_implemented(UNSUPPORTED[t])
        if t not in allowed:
            raise S3Error("MalformedXML", f"{where}: unexpected element <{t}>")
        if t in out:
            raise S3Error("MalformedXML", f"{where}: <{t}> given twice")
        out[t] = c
    return out


def _text(e: ET.Element) -> str:
    return (e.text or "").strip()


def _raw(e: ET.Element) -> str:
    """A key prefix or rule ID: exactly as sent (a prefix may begin with a space)."""
    return e.text or ""


def _int(e: ET.Element, where: str, *, low: int, high: int) -> int:
    raw = _text(e)
    if not raw.isdigit() or not raw.isascii():
        raise S3Error("InvalidArgument", f"{where}: <{tag(e)}> {raw!r} is not a whole number")
    n = int(raw)
    if not low <= n <= high:
        raise S3Error("InvalidArgument", f"{where}: <{tag(e)}> {n} must be {low}..{high}")
    return n


def _date(e: ET.Element, where: str) -> int:
    raw = _text(e)
    try:
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise S3Error(
            "InvalidArgument", f"{where}: <Date> {raw!r} is not an ISO 8601 date"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    ts = t.timestamp()
    if ts % DAY_S or ts < 0:
        raise S3Error("InvalidArgument", f"{where}: <Date> {raw!r} must be a midnight UTC")
    return int(ts)


def _filter(node: ET.Element, where: str) -> tuple[str, int | None, int | None]:
    """(prefix, size_gt, size_lt) of a ``<Filter>``: one condition, or several in ``<And>``."""
    conds = {"Prefix", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}
    kids = _only(node, conds | {"And"}, f"{where} <Filter>")
    if "And" in kids:
        if len(kids) > 1:
            raise S3Error("MalformedXML", f"{where} <Filter>: <And> must be its only condition")
        kids = _only(kids["And"], conds, f"{where} <Filter><And>")
    elif len(kids) > 1:
        raise S3Error("MalformedXML", f"{where} <Filter>: several conditions need an <And>")
    prefix = _raw(kids["Prefix"]) if "Prefix" in kids else ""
    big = 1 << 62
    gt_el, lt_el = kids.get("ObjectSizeGreaterThan"), kids.get("ObjectSizeLessThan")
    gt = None if gt_el is None else _int(gt_el, where, low=0, high=big)
    lt = None if lt_el is None else _int(lt_el, where, low=1, high=big)
    if gt is not None and lt is not None and gt >= lt:
        raise S3Error(
            "InvalidArgument",
            f"{where}: ObjectSizeGreaterThan {gt} must be below ObjectSizeLessThan {lt}",
        )
    return prefix, gt, lt


def parse_rules(body: bytes) -> tuple[Rule, ...]:
    root = parse(body, "LifecycleConfiguration")
    nodes = items(root, "Rule", most=MAX_RULES, too_many="InvalidArgument", what="lifecycle rules")
    rules = [_rule(node, n) for n, node in enumerate(nodes, 1)]
    ids = [r.id for r in rules]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        raise S3Error("InvalidArgument", f"rule ID {dup!r} is used twice; IDs must be unique")
    return tuple(rules)


def _rule(node: ET.Element, n: int) -> Rule:
    allowed = {"ID", "Status", "Filter", "Prefix", "Expiration", "AbortIncompleteMultipartUpload"}
    kids = _only(node, allowed, f"rule {n}")
    rid = _raw(kids["ID"]) if "ID" in kids else f"rule-{n}"
    where = f"rule {rid!r}"
    if not rid or len(rid) > MAX_ID:
        raise S3Error("InvalidArgument", f"rule {n}: <ID> must be 1..{MAX_ID} characters")
    if "Status" not in kids:
        raise S3Error("MalformedXML", f"{where}: <Status> is required (Enabled or Disabled)")
    status = _text(kids["Status"])
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML", f"{where}: <Status> {status!r}: Enabled or Disabled")
    if "Filter" in kids and "Prefix" in kids:
        raise S3Error("MalformedXML", f"{where}: give <Filter> or <Prefix>, not both")
    prefix, gt, lt = "", None, None
    if "Filter" in kids:
        prefix, gt, lt = _filter(kids["Filter"], where)
    elif "Prefix" in kids:
        prefix = _raw(kids["Prefix"])
    days = date = abort = None
    if "Expiration" in kids:
        exp = _only(kids["Expiration"], {"Days", "Date"}, f"{where} <Expiration>")
        if len(exp) != 1:
            raise S3Error("MalformedXML", f"{where} <Expiration>: exactly one of <Days>, <Date>")
        if "Days" in exp:
            days = _int(exp["Days"], where, low=1, high=MAX_DAYS)
        else:
            date = _date(exp["Date"], where)
    if "AbortIncompleteMultipartUpload" in kids:
        a = _only(kids["AbortIncompleteMultipartUpload"], {"DaysAfterInitiation"}, where)
        if "DaysAfterInitiation" not in a:
            raise S3Error("MalformedXML", f"{where}: <DaysAfterInitiation> is required")
        abort = _int(a["DaysAfterInitiation"], where, low=1, high=MAX_DAYS)
    if days is None and date is None and abort is None:
        raise S3Error(
            "InvalidArgument",
            f"{where}: no action; give <Expiration> or <AbortIncompleteMultipartUpload>",
        )
    return Rule(rid, status == "Enabled", prefix, gt, lt, days, date, abort)


def render_rules(rules: tuple[Rule, ...]) -> bytes:
    parts = []
    for r in rules:
        sized = r.size_gt is not None or r.size_lt is not None
        conds = [el("Prefix", r.prefix)] if r.prefix or not sized else []
        if r.size_gt is not None:
            conds.append(el("ObjectSizeGreaterThan", r.size_gt))
        if r.size_lt is not None:
            conds.append(el("ObjectSizeLessThan", r.size_lt))
        f = "".join(conds) if len(conds) == 1 else "<And>" + "".join(conds) + "</And>"
        body = el("ID", r.id) + "<Filter>" + f + "</Filter>"
        body += el("Status", "Enabled" if r.enabled else "Disabled")
        if r.expire_days is not None:
            body += "<Expiration>" + el("Days", r.expire_days) + "</Expiration>"
        elif r.expire_date is not None:
            when = dt.datetime.fromtimestamp(r.expire_date, tz=dt.UTC)
            body += "<Expiration>" + el("Date", when.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            body += "</Expiration>"
        if r.abort_days is not None:
            body += "<AbortIncompleteMultipartUpload>" + el("DaysAfterInitiation", r.abort_days)
            body += "</AbortIncompleteMultipartUpload>"
        parts.append("<Rule>" + body + "</Rule>")
    return doc("LifecycleConfiguration", *parts)
