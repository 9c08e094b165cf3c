"""Quorum sizes, with the arithmetic beside each row."""

from __future__ import annotations

import pytest

from cloudless.objectstore import quorum
from cloudless.objectstore.s3.errors import S3Error

SIZES = [
    # (R, W = R//2 + 1, Rq = R - W + 1); W + Rq > R so every read meets every write
    (1, 1, 1),
    (2, 2, 1),  # 2 + 1 > 2
    (3, 2, 2),  # 2 + 2 > 3
    (5, 3, 3),
]


@pytest.mark.parametrize(("r", "w", "rq"), SIZES)
def test_sizes(r: int, w: int, rq: int) -> None:
    assert (quorum.write_quorum(r), quorum.read_quorum(r)) == (w, rq)
    assert w + rq > r


def test_check_names_every_failed_replica() -> None:
    quorum.check("write x", 2, ("a", "b", "c"), {"c": "down"})  # 2 of 3 answered: fine
    with pytest.raises(S3Error) as e:
        quorum.check("write x", 2, ("a", "b", "c"), {"b": "refused", "c": "down"})
    assert e.value.code == "ServiceUnavailable"
    assert "1 of 3 replicas answered, 2 needed (b: refused; c: down)" in e.value.message


FALLBACKS = [
    # (partition, owners, nodes, fallbacks): non-owners, rotated by partition % len
    (0, ("a", "b"), ("a", "b", "c", "d"), ["c", "d"]),
    (1, ("a", "b"), ("a", "b", "c", "d"), ["d", "c"]),
    (5, ("c",), ("a", "b", "c"), ["b", "a"]),  # others [a, b], 5 % 2 = 1
    (3, ("a", "b"), ("a", "b"), []),  # nobody to hold a hint
]


@pytest.mark.parametrize(("p", "owners", "nodes", "want"), FALLBACKS)
def test_fallbacks(
    p: int, owners: tuple[str, ...], nodes: tuple[str, ...], want: list[str]
) -> None:
    from cloudless.objectstore.handoff import fallbacks

    assert fallbacks(p, owners, nodes) == want
