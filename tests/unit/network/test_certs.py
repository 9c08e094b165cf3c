"""Issued-certificate records: which one is current, and the blocklist (tables)."""

from __future__ import annotations

import pytest

from cloudless.network.certs import IssuedCert, blocklist, current, expired

KEY = "-----BEGIN NEBULA X25519 PUBLIC KEY-----\nAQ==\n-----END NEBULA X25519 PUBLIC KEY-----\n"


def rec(
    slot: int = 1, key: str = KEY, at: float = 0.0, hours: int = 3, fp: str = "f"
) -> IssuedCert:
    return IssuedCert(slot, key, at, hours, "CERT", fp)


@pytest.mark.parametrize(
    ("r", "slot", "key", "now", "want"),
    [
        # 3 h certificate: due at 2/3 = 7200 s
        (rec(), 1, KEY, 7199.0, True),
        (rec(), 1, KEY, 7200.0, False),  # due for renewal
        (rec(), 2, KEY, 0.0, False),  # the node holds another slot now
        (rec(), 1, "other key", 0.0, False),  # the node made a new key
        (rec(key=""), 1, KEY, 0.0, False),  # made here, and now the node sends its own
        (None, 1, KEY, 0.0, False),  # never issued
    ],
)
def test_current(r: IssuedCert | None, slot: int, key: str, now: float, want: bool) -> None:
    assert current(r, slot, key, now) is want


def test_blocklist_is_removed_nodes_unexpired_certificates() -> None:
    records = {
        "held": rec(fp="a"),
        "gone": rec(fp="b"),
        "gone-expired": rec(fp="c", at=-10_800.0),  # 3 h ago + 3 h life: expired at 0
        "gone-no-fp": rec(fp=""),
    }
    assert blocklist(records, {"held"}, now=0.0) == ["b"]
    assert expired(records["gone-expired"], 0.0) and not expired(records["gone"], 10_799.0)
