"""Quorum arithmetic (pure).

With ``R`` copies, a write is acknowledged once ``W = R // 2 + 1`` replicas stored it and a
read merges the answers of ``Rq = R - W + 1`` replicas, so every read quorum meets every
write quorum (``W + Rq > R``): R=3 -> W=2, Rq=2; R=2 -> W=2, Rq=1; R=1 -> 1, 1.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudless.objectstore.s3.errors import S3Error


def write_quorum(replication: int) -> int:
    return replication // 2 + 1


def read_quorum(replication: int) -> int:
    return replication - write_quorum(replication) + 1


def check(what: str, need: int, nodes: Sequence[str], failures: dict[str, str]) -> None:
    """Raise ``ServiceUnavailable`` naming the failed replicas if fewer than ``need`` of
    ``nodes`` answered."""
    ok = len(nodes) - len(failures)
    if ok < need:
        why = "; ".join(f"{n}: {failures[n]}" for n in sorted(failures))
        raise S3Error(
            "ServiceUnavailable",
            f"{what}: {ok} of {len(nodes)} replicas answered, {need} needed ({why}); retry "
            "once the nodes are back",
        )
