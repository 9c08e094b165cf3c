"""AWS Signature Version 4 for S3: header-signed and presigned requests.

Pure functions: ``parse`` reads the credential scope from a request (so the caller can look
the secret up), ``verify`` recomputes the signature with the secret and the current time and
raises an ``S3Error`` naming what is wrong. Rules enforced:

* the algorithm is ``AWS4-HMAC-SHA256``, the scope ``<key>/<yyyymmdd>/<region>/s3/aws4_request``
  and its date matches ``x-amz-date``;
* header auth: ``|now - x-amz-date| <= MAX_SKEW`` (``RequestTimeTooSkewed``), and
  ``x-amz-content-sha256`` is present and signed;
* presigned: ``X-Amz-Expires`` is 1..604800 s and ``now`` is within it (``AccessDenied``:
  "Request has expired"), ``now`` is not before the signing time minus ``MAX_SKEW``;
* ``host`` is always among the signed headers.

The canonical URI is the path exactly as sent (S3 does not normalise or double-encode it).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from cloudless.objectstore.s3.errors import S3Error

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60
MAX_EXPIRES = 7 * 24 * 3600
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_MODES = {UNSIGNED, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z\Z", re.ASCII)
_DAY = re.compile(r"\d{8}\Z", re.ASCII)
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*\Z")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<sh>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


@dataclass(frozen=True)
class Request:
    """What signing covers: method, path as sent, raw query string, headers (lowercase
    names; repeated headers joined with ',')."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Parsed:
    key_id: str
    date: str
    region: str
    amz_date: str
    signed_headers: tuple[str, ...]
    signature: str
    presigned: bool
    expires: int = 0

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/s3/aws4_request"


@dataclass(frozen=True)
class Verified:
    """An authenticated request: who signed it, how its payload is protected, and what a
    streaming body's chunk signatures chain from."""

    key_id: str
    payload: str
    signature: str
    amz_date: str
    scope: str
    signing_key: bytes


@functools.lru_cache(maxsize=64)
def query_pairs(query: str) -> tuple[tuple[str, str], ...]:
    """The decoded ``(name, value)`` pairs of a raw query string, in order (cached: one
    request parses its query several times)."""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((unquote(k) if "%" in k else k, unquote(v) if "%" in v else v))
    return tuple(pairs)


def _denied(message: str) -> S3Error:
    return S3Error("AccessDenied", message)


def _scope(cred: str) -> tuple[str, str, str]:
    parts = cred.split("/")
    if len(parts) != 5 or parts[3] != "s3" or parts[4] != "aws4_request":
        raise _denied(f"credential {cred!r}: expected <key>/<yyyymmdd>/<region>/s3/aws4_request")
    if not _DAY.match(parts[1]):
        raise _denied(f"credential date {parts[1]!r}: expected yyyymmdd")
    return parts[0], parts[1], parts[2]


def parse(req: Request) -> Parsed | None:
    """The request's claimed signature, or ``None`` if it carries none (anonymous)."""
    auth = req.headers.get("authorization")
    q = dict(query_pairs(req.query))
    if auth is not None:
        m = _AUTH.match(auth.strip())
        if not m:
            if auth.startswith("AWS "):
                raise S3Error("InvalidRequest", "signature version 2 is not supported; use SigV4")
            raise _denied("Authorization header is not a valid AWS4-HMAC-SHA256 signature")
        key_id, date, region = _scope(m["cred"])
        amz_date = req.headers.get("x-amz-date", "")
        if not amz_date:
            raise _denied("x-amz-date header is missing")
        return Parsed(key_id, date, region, amz_date, tuple(m["sh"].split(";")), m["sig"], False)
    if "X-Amz-Signature" in q or "X-Amz-Algorithm" in q:
        missing = [
            k
            for k in (
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature",
            )
            if k not in q
        ]
        if missing:
            raise _denied(f"presigned URL lacks {', '.join(missing)}")
        if q["X-Amz-Algorithm"] != ALGORITHM:
            raise _denied(f"X-Amz-Algorithm {q['X-Amz-Algorithm']!r}: only {ALGORITHM}")
        try:
            expires = int(q["X-Amz-Expires"])
        except ValueError:
            raise _denied("X-Amz-Expires is not a number of seconds") from None
        if not 1 <= expires <= MAX_EXPIRES:
            raise _denied(f"X-Amz-Expires {expires}: must be 1..{MAX_EXPIRES} seconds")
        key_id, date, region = _scope(q["X-Amz-Credential"])
        sig = q["X-Amz-Signature"]
        if not _HEX64.match(sig):
            raise _denied("X-Amz-Signature is not 64 hex digits")
        return Parsed(
            key_id,
            date,
            region,
            q["X-Amz-Date"],
            tuple(q["X-Amz-SignedHeaders"].split(";")),
            sig,
            True,
            expires,
        )
    return None


@functools.lru_cache(maxsize=256)
def _parse_time(amz_date: str) -> float:
    """Seconds since the epoch of an ``x-amz-date`` (cached: requests of one second share
    it; a malformed one raises each time)."""
    try:
        if not _AMZ_DATE.match(amz_date):
            raise ValueError(amz_date)
        t = dt.datetime(
            int(amz_date[0:4]),
            int(amz_date[4:6]),
            int(amz_date[6:8]),
            int(amz_date[9:11]),
            int(amz_date[11:13]),
            int(amz_date[13:15]),
            tzinfo=dt.UTC,
        )
    except ValueError:
        raise _denied(f"x-amz-date {amz_date!r}: expected yyyymmddThhmmssZ") from None
    return t.timestamp()


@functools.lru_cache(maxsize=1024)
def _enc(s: str) -> str:
    """URI-encoded as SigV4 wants (cached: credentials, algorithm, expiry and signed header
    lists repeat from request to request)."""
    return s if _UNRESERVED.match(s) else quote(s, safe="-_.~")


def canonical_request(req: Request, parsed: Parsed, payload: str) -> str:
    pairs = [
        (k, v)
        for k, v in query_pairs(req.query)
        if not (parsed.presigned and k == "X-Amz-Signature")
    ]
    query = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(pairs))
    lines = []
    for name in parsed.signed_headers:
        value = req.headers.get(name)
        if value is None:
            raise _denied(f"signed header {name!r} is not in the request")
        lines.append(f"{name}:{' '.join(value.split())}\n")
    return "\n".join(
        [req.method, req.path, query, "".join(lines), ";".join(parsed.signed_headers), payload]
    )


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str) -> bytes:
    """The SigV4 key for a day and region (cached: it changes once a day per key)."""
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def sign(key: bytes, string_to_sign: str) -> str:
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


def verify(req: Request, parsed: Parsed, secret: str, now: float) -> Verified:
    """Check ``parsed`` against the request and ``secret`` at time ``now``."""
    if (
        parsed.signed_headers != tuple(sorted(parsed.signed_headers))
        or "host" not in parsed.signed_headers
    ):
        raise _denied("SignedHeaders must be sorted and include host")
    t = _parse_time(parsed.amz_date)
    if parsed.amz_date[:8] != parsed.date:
        raise _denied(f"credential date {parsed.date} does not match x-amz-date {parsed.amz_date}")
    if parsed.presigned:
        if now > t + parsed.expires:
            raise _denied("Request has expired")
        if now < t - MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed", "presigned URL is dated in the future")
        payload = UNSIGNED
    else:
        if abs(now - t) > MAX_SKEW:
            raise S3Error(
                "RequestTimeTooSkewed",
                f"request time {parsed.amz_date} is {abs(now - t):.0f} s from the server's; "
                f"at most {MAX_SKEW} s allowed: fix the client's clock",
            )
        payload = req.headers.get("x-amz-content-sha256", "")
        if not payload:
            raise S3Error("InvalidRequest", "x-amz-content-sha256 header is missing")
        if payload not in PAYLOAD_MODES and not _HEX64.match(payload):
            raise S3Error("InvalidArgument", f"x-amz-content-sha256 {payload!r} is not valid")
        if "x-amz-content-sha256" not in parsed.signed_headers:
            raise _denied("x-amz-content-sha256 must be a signed header")
    creq = canonical_request(req, parsed, payload)
    sts = "\n".join(
        [ALGORITHM, parsed.amz_date, parsed.scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    key = signing_key(secret, parsed.date, parsed.region)
    if not hmac.compare_digest(sign(key, sts), parsed.signature):
        raise S3Error(
            "SignatureDoesNotMatch",
            "the request signature we calculated does not match the signature you provided; "
            "check your secret key and signing method",
        )
    return Verified(parsed.key_id, payload, parsed.signature, parsed.amz_date, parsed.scope, key)


def chunk_signature(v: Verified, previous: str, chunk_sha256: str) -> str:
    sts = "\n".join(
        ["AWS4-HMAC-SHA256-PAYLOAD", v.amz_date, v.scope, previous, EMPTY_SHA256, chunk_sha256]
    )
    return sign(v.signing_key, sts)


def trailer_signature(v: Verified, previous: str, trailer: bytes) -> str:
    sts = "\n".join(
        [
            "AWS4-HMAC-SHA256-TRAILER",
            v.amz_date,
            v.scope,
            previous,
            hashlib.sha256(trailer).hexdigest(),
        ]
    )
    return sign(v.signing_key, sts)


def sign_for_test(
    req: Request,
    key_id: str,
    secret: str,
    region: str,
    amz_date: str,
    signed_headers: Sequence[str],
    payload: str,
) -> str:
    """The Authorization header a correct client would send (for tests of the verifier)."""
    parsed = Parsed(
        key_id, amz_date[:8], region, amz_date, tuple(sorted(signed_headers)), "", False
    )
    creq = canonical_request(req, parsed, payload)
    sts = "\n".join([ALGORITHM, amz_date, parsed.scope, hashlib.sha256(creq.encode()).hexdigest()])
    sig = sign(signing_key(secret, parsed.date, region), sts)
    return (
        f"{ALGORITHM} Credential={key_id}/{parsed.scope}, "
        f"SignedHeaders={';'.join(parsed.signed_headers)}, Signature={sig}"
    )
