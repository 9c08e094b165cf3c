"""Which starting nodes must catch up before serving reads (``service.must_catch_up``), and
which nodes a layout history reads from (``service.reads_from``)."""

from __future__ import annotations

import pytest

from cloudless.objectstore import history as h
from cloudless.objectstore.layout import NodeRole
from cloudless.objectstore.service import must_catch_up, reads_from

GiB = 1 << 30


def _first(*names: str) -> h.LayoutHistory:
    hist = h.stage_replication(h.LayoutHistory(), min(3, len(names)))
    for i, n in enumerate(names):
        hist = h.stage(hist, n, NodeRole(f"z{i}", GiB))
    return h.apply(hist, 0)[0]


V1 = _first("a", "b", "c")
JOINING = h.apply(h.stage(V1, "d", NodeRole("z0", GiB)), 1)[0]  # v2 staged, nobody synced


@pytest.mark.parametrize(
    ("history", "node", "read"),
    [
        (h.LayoutHistory(), "a", False),  # no layout yet
        (V1, "a", True),  # a first layout is read from at once
        (V1, "d", False),  # not in it
        (JOINING, "d", False),  # in v2, which reads do not use until it is synced
        (JOINING, "a", True),
    ],
)
def test_reads_from(history: h.LayoutHistory, node: str, read: bool) -> None:
    assert reads_from(history, node) is read


@pytest.mark.parametrize(
    ("returning", "placed_before_start", "must", "why"),
    [
        (False, False, False, "a fresh node, or one that starts a cluster or joins one"),
        (True, False, True, "it ran before: it may have missed writes"),
        (True, True, True, "it ran before and is in the layout"),
        (False, True, True, "wiped or replaced disk while in the layout: every row missing"),
    ],
)
def test_must_catch_up(returning: bool, placed_before_start: bool, must: bool, why: str) -> None:
    assert must_catch_up(returning, placed_before_start) is must, why
