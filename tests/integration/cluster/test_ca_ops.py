"""``ca status`` and coordinator removal against a live coordinator (in-memory store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloudless.cli.client import ApiError, Client
from cloudless.cli.users import issue_user
from cloudless.coordinator.state.coordinators import CoordinatorInfo, known_coordinators, register
from cloudless.security.identity import SpiffeId


def _status(admin: Client, tmp: Path, name: str) -> None:
    issue_user(admin, "vic", "viewer", tmp / "vic", ttl_seconds=30 * 86400)
    doc = admin.call("GET", "/v1/ca/status")
    assert [r["role"] for r in doc["roots"]] == ["issuing"]
    assert doc["roots"][0]["days_left"] > 3000  # a 10-year root
    assert doc["rotation"] == "none"
    assert doc["coordinator"]["spiffe_id"].endswith(f"/service/coordinator-{name}")
    assert 364 < doc["coordinator"]["days_left"] < 366  # a 1-year leaf, issued at start
    (vic,) = doc["users"]
    assert vic["name"] == "vic" and 29 < vic["days_left"] <= 30


async def test_ca_status_and_coordinator_removal(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    coord, admin, _agents, _start = cluster
    await asyncio.to_thread(_status, admin, tmp_path, coord.config.name)

    await register(coord.store, CoordinatorInfo("ghost", "https://10.0.0.9:1", "x:1", "x:2"))
    with pytest.raises(ApiError) as e:
        await asyncio.to_thread(admin.call, "DELETE", "/v1/cluster/coordinators/nobody")
    assert e.value.status == 404
    with pytest.raises(ApiError) as e:
        await asyncio.to_thread(
            admin.call, "DELETE", f"/v1/cluster/coordinators/{coord.config.name}"
        )
    assert e.value.status == 409 and "cannot remove itself" in e.value.message
    res = await asyncio.to_thread(admin.call, "DELETE", "/v1/cluster/coordinators/ghost")
    assert res == {"removed": "ghost", "etcd_member_removed": False}
    assert [c.name for c in await known_coordinators(coord.store)] == [coord.config.name]
    revoked = await coord.state.revocations.get("coordinator:ghost")
    assert revoked is not None
    assert revoked.value.subject == SpiffeId.service("coordinator-ghost", "cloudless").uri
