"""``NodeColumns.update`` gives exactly what ``NodeColumns.build`` gives, whatever changed."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudless.model.node import Node, NodeConditions, NodeState
from cloudless.model.resources import Resources
from cloudless.scheduler.snapshot import NodeColumns, Snapshot

ARRAYS = (
    "alloc",
    "usage",
    "state",
    "memory_pressure",
    "disk_pressure",
    "reliability",
    "cost",
    "public",
    "nat",
)


def node(i: int) -> Node:
    return Node.make(
        f"n{i:03d}",
        state=NodeState.READY,
        zone=f"z{i % 3}",
        labels={"rack": str(i % 4)},
        allocatable=Resources(4000, 8 << 30, 100 << 30, 10**9),
    )


def assert_same(a: NodeColumns, b: NodeColumns) -> None:
    assert a.nodes == b.nodes and dict(a.index) == dict(b.index)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.cols.keys() == b.cols.keys()
    for k in a.cols:
        assert a.cols[k].values == b.cols[k].values, k
        np.testing.assert_array_equal(a.cols[k].codes, b.cols[k].codes, err_msg=k)


# One step of history: (kind, node position, value).
step = st.tuples(
    st.sampled_from(["usage", "state", "label", "pressure", "cost", "move", "add", "drop"]),
    st.integers(0, 1000),
    st.integers(0, 7),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_update_equals_a_fresh_build(history: list[tuple[str, int, int]]) -> None:
    nodes = [node(i) for i in range(12)]
    cols = NodeColumns.build(nodes)
    nxt = 100
    for kind, pos, v in history:
        i = pos % len(nodes)
        x = nodes[i]
        if kind == "usage":
            nodes[i] = dataclasses.replace(x, usage=Resources(100 * v, v << 20, 0, 0))
        elif kind == "state":
            nodes[i] = dataclasses.replace(x, state=list(NodeState)[v % len(NodeState)])
        elif kind == "label":
            nodes[i] = dataclasses.replace(x, labels={**x.labels, "rack": f"r{v}"})
        elif kind == "pressure":
            nodes[i] = dataclasses.replace(x, conditions=NodeConditions(memory_pressure=v % 2 == 0))
        elif kind == "cost":
            nodes[i] = dataclasses.replace(x, cost_per_hour=v / 10, reliability=v / 7)
        elif kind == "move":
            nodes.append(nodes.pop(i))  # same records, another order
        elif kind == "add":
            nodes.insert(i, node(nxt))
            nxt += 1
        elif kind == "drop" and len(nodes) > 1:
            nodes.pop(i)
        cols = cols.update(nodes)
        assert_same(cols, NodeColumns.build(nodes))


def test_unchanged_nodes_reuse_everything() -> None:
    nodes = [node(i) for i in range(50)]
    cols = NodeColumns.build(nodes)
    assert cols.update(list(nodes)) is cols


def test_a_usage_refresh_keeps_the_label_columns() -> None:
    nodes = [node(i) for i in range(50)]
    cols = NodeColumns.build(nodes)
    nodes[7] = dataclasses.replace(nodes[7], usage=Resources(500, 1 << 30, 0, 0))
    new = cols.update(nodes)
    assert new.cols is cols.cols  # not rebuilt
    assert new.usage[0, 7] == 500 and cols.usage[0, 7] == 0  # the old columns are untouched


def test_snapshot_from_columns_equals_snapshot_from_nodes() -> None:
    nodes = [node(i) for i in range(20)]
    a = Snapshot.build(nodes)
    b = Snapshot.build(NodeColumns.build(nodes))
    np.testing.assert_array_equal(a.alloc, b.alloc)
    np.testing.assert_array_equal(a.cost_norm, b.cost_norm)
    np.testing.assert_array_equal(a.column("rack").codes, b.column("rack").codes)
