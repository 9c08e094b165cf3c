"""Fencing: leader-only writes carry the leader's claim in the same transaction.

A ``Fence`` is a set of compares that hold only while the writer still leads (the election
key still holds its lease). ``fenced_txn`` adds them to a transaction and, when the
transaction fails, tells apart "fence broken" (raise ``Fenced``) from "your own compares
failed" (return the failed result), using reads taken in the same revision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudless.store.errors import Fenced
from cloudless.store.protocol import Store
from cloudless.store.types import Compare, Get, GetResult, TxnOp, TxnResult


@dataclass(frozen=True)
class Fence:
    compares: tuple[Compare, ...]
    holder: str  # who we claim to be, for messages

    def broken_by(self, current: dict[str, GetResult]) -> str | None:
        """Why the fence does not hold against these reads, or ``None`` if it does."""
        for c in self.compares:
            kvs = current[c.key].kvs
            if not c.holds(kvs[0] if kvs else None):
                return f"{c.key} no longer names {self.holder}"
        return None


NO_FENCE = Fence((), "anyone")


async def fenced_txn(
    store: Store,
    fence: Fence,
    compares: Sequence[Compare],
    success: Sequence[TxnOp],
    failure: Sequence[TxnOp] = (),
) -> TxnResult:
    """``store.txn`` guarded by ``fence``. Raises ``Fenced`` if the fence failed; otherwise
    returns the result, whose ``results`` are those of ``success`` or ``failure`` only."""
    if not fence.compares:
        return await store.txn(compares, success, failure)
    keys = sorted({c.key for c in fence.compares})
    res = await store.txn(
        [*fence.compares, *compares], success, [*(Get(k) for k in keys), *failure]
    )
    if res.succeeded:
        return res
    reads = {k: r for k, r in zip(keys, res.results, strict=False) if isinstance(r, GetResult)}
    reason = fence.broken_by(reads)
    if reason is not None:
        raise Fenced(f"write refused: {reason}; this coordinator is no longer the leader")
    return TxnResult(False, res.revision, res.results[len(keys) :])
