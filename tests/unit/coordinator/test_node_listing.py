"""``GET /v1/nodes``' body: each node encoded once per record revision, removed ones left out,
undecodable ones reported by key."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.userapi.app import NodeListingCache, node_view
from cloudless.lib.clock import FakeClock
from cloudless.model.node import Node, NodeState
from cloudless.store.memory import MemoryStore


async def test_listing_reencodes_only_changed_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore(FakeClock())
    st = ClusterState(store)
    for i in range(3):
        await st.nodes.create(f"n{i}", Node.make(f"n{i}", state=NodeState.READY))
    cache = NodeListingCache()
    encoded: list[str] = []

    def counting_view(n: Node) -> dict[str, object]:
        encoded.append(n.id)
        return node_view(n)

    import cloudless.coordinator.userapi.app as http_api

    monkeypatch.setattr(http_api, "node_view", counting_view)

    async def render() -> Any:
        return json.loads(cache.render(st.nodes, await store.list(st.nodes.prefix)))

    first = await render()
    assert [n["id"] for n in first["nodes"]] == ["n0", "n1", "n2"]
    assert encoded == ["n0", "n1", "n2"] and first["problems"] == []
    encoded.clear()
    rec = await st.nodes.get("n1")
    assert rec is not None
    n1 = rec.value
    await st.nodes.put("n1", replace(n1, state=NodeState.CORDONED))
    await st.nodes.put("n2", replace(n1, id="n2", state=NodeState.REMOVED))
    await store.put(st.nodes.key("n3"), b"{not json")
    second = await render()
    assert encoded == ["n1"]  # n0 reused; n2 removed (decoded, not encoded); n3 undecodable
    assert [(n["id"], n["state"]) for n in second["nodes"]] == [
        ("n0", "ready"),
        ("n1", "cordoned"),
    ]
    assert len(second["problems"]) == 1 and "n3" in second["problems"][0]
