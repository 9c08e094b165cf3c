"""The plugin contracts.

``Filter.check(group, detail)`` returns ``(reason, passes)`` pairs, one boolean array over
all nodes each; with ``detail=False`` a filter may fold its pairs into one (the engine only
needs the AND), with ``detail=True`` it must split them so every refused node is counted
under the first reason it fails. ``refresh`` says when the answer can change while one
workload is being placed: ``STATIC`` never, ``NODE`` only on the node just used (the engine
then calls ``check_at``), ``STEP`` anywhere (re-checked before every replica).

``Factor.score(group)`` returns values in [0, 1] for all nodes; ``NODE`` factors also answer
``score_at(group, j)`` with the same arithmetic for one node.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import numpy as np

from cloudless.model.workload import WorkloadSpec
from cloudless.scheduler.context import Group
from cloudless.scheduler.snapshot import F64, Bool

Checks = list[tuple[str, Bool]]


class Refresh(enum.Enum):
    STATIC = "static"
    NODE = "node"
    STEP = "step"


class Filter:
    name: ClassVar[str] = ""
    refresh: ClassVar[Refresh] = Refresh.STATIC

    def applies(self, spec: WorkloadSpec) -> bool:
        return True

    def check(self, g: Group, detail: bool) -> Checks:
        raise NotImplementedError

    def check_at(self, g: Group, j: int) -> bool:
        """For ``NODE`` filters: whether node ``j`` passes now."""
        return bool(all(m[j] for _, m in self.check(g, False)))


class Factor:
    name: ClassVar[str] = ""
    default_weight: ClassVar[float] = 0.0
    refresh: ClassVar[Refresh] = Refresh.STATIC

    def score(self, g: Group) -> F64:
        raise NotImplementedError

    def score_at(self, g: Group, j: int) -> float:
        return float(self.score(g)[j])


def fold(reason: str, masks: list[Bool], n: int) -> Checks:
    """All ``masks`` ANDed into one check (for ``detail=False``)."""
    if not masks:
        return []
    out = masks[0].copy()
    for m in masks[1:]:
        out &= m
    return [(reason, out)]


def ones(n: int) -> Bool:
    return np.ones(n, dtype=np.bool_)
