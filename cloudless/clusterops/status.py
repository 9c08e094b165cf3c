"""What the CA looks like now (pure): trusted roots with their part in a root rotation, and
the expiry of the certificates the coordinator knows about."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509

from cloudless.security.bundle import certificate_digest
from cloudless.security.identity import SpiffeId


def _cert(cert: x509.Certificate, now: float) -> dict[str, Any]:
    after = cert.not_valid_after_utc.timestamp()
    return {
        "not_before": cert.not_valid_before_utc.timestamp(),
        "not_after": after,
        "days_left": round((after - now) / 86400, 1),
        "serial": format(cert.serial_number, "x"),
    }


def rotation_phase(
    issuing: str, next_digest: str | None, others: Sequence[str], abandoned: bool = False
) -> str:
    if abandoned:
        return (
            "aborting: the old root issues again; the abandoned one is dropped once every "
            "certificate is back"
        )
    if next_digest:
        return "begun: the next root is trusted, the current one still issues"
    if others:
        return "switched: the new root issues, the old one is still trusted until retired"
    return "none"


def ca_status(
    *,
    roots: Iterable[x509.Certificate],
    issuing: str,
    next_digest: str | None,
    own: x509.Certificate | None,
    users: Iterable[dict[str, Any]],
    now: float,
    abandoned: str | None = None,
) -> dict[str, Any]:
    """``abandoned``: the new root of a rotation being aborted (``revert``, ``untrust``)."""
    out_roots = []
    others = []
    seen_abandoned = False
    for r in roots:
        d = certificate_digest(r)
        role = "issuing" if d == issuing else "next" if d == next_digest else "previous"
        if d == abandoned and role != "issuing":
            role, seen_abandoned = "abandoned", True
        if role == "previous":
            others.append(d)
        out_roots.append(
            {"digest": d, "role": role, "subject": r.subject.rfc4514_string(), **_cert(r, now)}
        )
    doc: dict[str, Any] = {
        "roots": out_roots,
        "rotation": rotation_phase(issuing, next_digest, others, seen_abandoned),
        "users": [
            {
                "name": u.get("name"),
                "role": u.get("role"),
                "not_after": u.get("expires_at", 0.0),
                "days_left": round((float(u.get("expires_at", 0.0)) - now) / 86400, 1),
            }
            for u in users
        ],
    }
    if own is not None:
        doc["coordinator"] = {"spiffe_id": SpiffeId.from_certificate(own).uri, **_cert(own, now)}
    return doc
