"""Building S3's XML answers and reading its small XML requests."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import quote
from xml.sax.saxutils import escape

from cloudless.objectstore.s3.errors import S3Error

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML = 1 << 20


def iso(ts: float) -> str:
    t = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def http_date(ts: float) -> str:
    return _http_date(int(ts))


@functools.lru_cache(maxsize=1024)
def _http_date(second: int) -> str:
    """An HTTP date names whole seconds; objects written in the same second share one."""
    return email.utils.formatdate(second, usegmt=True)


def el(tag: str, value: object) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def doc(root: str, *children: str) -> bytes:
    body = "".join(children)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NS}">{body}</{root}>'.encode()


def url_encoded(value: str, encode: bool) -> str:
    """``encoding-type=url``: keys and prefixes percent-encoded (``/`` kept)."""
    return quote(value, safe="/") if encode else value


def parse(body: bytes, root: str) -> ET.Element:
    if len(body) > MAX_XML:
        raise S3Error("MalformedXML", f"request XML is over {MAX_XML} bytes")
    try:
        tree = ET.fromstring(body)
    except ET.ParseError as e:
        raise S3Error("MalformedXML", f"request XML does not parse: {e}") from None
    if tree.tag.split("}")[-1] != root:
        raise S3Error("MalformedXML", f"expected a <{root}> document, got <{tree.tag}>")
    return tree


def children(node: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in node if c.tag.split("}")[-1] == tag]


def text(node: ET.Element, tag: str) -> str | None:
    found = children(node, tag)
    return None if not found else (found[0].text or "")


def tag(node: ET.Element) -> str:
    """An element's name without its namespace."""
    return node.tag.split("}")[-1]


def items(
    root: ET.Element, item: str, *, most: int, too_many: str, what: str
) -> Iterator[ET.Element]:
    """The ``<item>`` children of a rules document's ``root``, in order, refused as they
    come: another element (``MalformedXML``), more than ``most`` (``too_many``, the S3
    code, naming ``what``), none at all (``MalformedXML``)."""
    n = 0
    for node in root:
        if tag(node) != item:
            raise S3Error("MalformedXML", f"{tag(root)}: unexpected <{tag(node)}>")
        if n == most:
            raise S3Error(too_many, f"more than {most} {what}")
        n += 1
        yield node
    if not n:
        raise S3Error("MalformedXML", f"{tag(root)}: no <{item}>")
