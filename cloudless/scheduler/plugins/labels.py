"""Label expressions over coded label columns (pure helpers shared by several filters)."""

from __future__ import annotations

import numpy as np

from cloudless.model.workload import LabelExpr, Operator
from cloudless.scheduler.snapshot import Bool, LabelColumn, Snapshot


def in_values(col: LabelColumn, values: tuple[str, ...]) -> Bool:
    """Nodes whose label value is one of ``values`` (absent never matches)."""
    table = np.zeros(len(col.values) + 1, dtype=np.bool_)
    for v in values:
        c = col.code(v)
        if c > 0:
            table[c] = True
    return table[col.codes]


def expr_mask(snap: Snapshot, e: LabelExpr) -> Bool:
    """Same answer as ``e.matches(node)`` for every node at once."""
    col = snap.column(e.key)
    match e.op:
        case Operator.EQ:
            return in_values(col, e.values[:1])
        case Operator.NE:
            return ~in_values(col, e.values[:1])
        case Operator.IN:
            return in_values(col, e.values)
        case Operator.NOT_IN:
            return ~in_values(col, e.values)
        case Operator.EXISTS:
            return np.asarray(col.codes > 0)
        case Operator.NOT_EXISTS:
            return np.asarray(col.codes == 0)
    raise AssertionError(e.op)


def expr_failure(e: LabelExpr) -> str:
    """What is wrong with a node that fails ``e``: ``zone not in [eu-1a]``."""
    vals = ", ".join(e.values)
    match e.op:
        case Operator.EQ:
            return f"{e.key} is not {e.values[0]}"
        case Operator.NE:
            return f"{e.key} is {e.values[0]}"
        case Operator.IN:
            return f"{e.key} not in [{vals}]"
        case Operator.NOT_IN:
            return f"{e.key} in [{vals}]"
        case Operator.EXISTS:
            return f"no label {e.key}"
        case Operator.NOT_EXISTS:
            return f"has label {e.key}"
    raise AssertionError(e.op)
