"""Name lookups: which node or replica a user's word means."""

from __future__ import annotations

import pytest

from cloudless.cli.session import find_node, pick_replica
from cloudless.lib.errors import CloudlessError, NotFound

NODES = [
    {"id": "a1-70326a", "name": "edge"},
    {"id": "a2-dc07d4", "name": "core"},
    {"id": "b1-000001", "name": "twin"},
    {"id": "b2-000002", "name": "twin"},
]


@pytest.mark.parametrize(
    ("ref", "node_id"),
    [
        ("a2-dc07d4", "a2-dc07d4"),  # an id
        ("edge", "a1-70326a"),  # a unique name
        ("a1", "a1-70326a"),  # a unique id prefix
        ("b2", "b2-000002"),
    ],
)
def test_find_node(ref: str, node_id: str) -> None:
    assert find_node(NODES, ref)["id"] == node_id


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        (
            "twin",
            CloudlessError,
            "2 nodes are named 'twin' (b1-000001, b2-000002): use the node id",
        ),
        ("b", CloudlessError, "node id prefix 'b' is ambiguous (b1-000001, b2-000002)"),
        ("zz", NotFound, "node 'zz' not found (by id or name)"),
    ],
)
def test_find_node_refuses(ref: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as ei:
        find_node(NODES, ref)
    assert str(ei.value).startswith(message)


REPLICAS = [
    {"id": "web-aaa1", "workload": "web", "observed": "pending"},
    {"id": "web-bbb2", "workload": "web", "observed": "running"},
    {"id": "web-ccc3", "workload": "web", "observed": "running"},
    {"id": "db-ddd4", "workload": "db", "observed": "failed"},
]


@pytest.mark.parametrize(
    ("ref", "rid", "note"),
    [
        ("web-aaa1", "web-aaa1", ""),  # an id, even though it is not running
        # a workload: its first *running* replica by id (aaa1 is pending)
        ("web", "web-bbb2", "replica web-bbb2 of workload web (3 replicas)"),
        # no replica runs: the first one anyway (its logs say why)
        ("db", "db-ddd4", "replica db-ddd4 of workload db (1 replicas)"),
        ("web-c", "web-ccc3", ""),  # a unique prefix
    ],
)
def test_pick_replica(ref: str, rid: str, note: str) -> None:
    assert pick_replica(REPLICAS, ref) == (rid, note)


def test_pick_replica_refuses() -> None:
    with pytest.raises(NotFound, match="ambiguous: web-aaa1, web-bbb2, web-ccc3"):
        pick_replica(REPLICAS, "web-")
    with pytest.raises(NotFound, match=r"replica 'x' not found \(by id, workload or id prefix\)"):
        pick_replica(REPLICAS, "x")
