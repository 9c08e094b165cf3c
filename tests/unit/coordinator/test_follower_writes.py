"""A write sent to a follower: 307 to the leader's API, or the JSON ``no_leader`` error (503)
while no leader is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloudless.coordinator.userapi.app import UserApi
from tests.unit.coordinator.route_api import route_only_api


def follower(leader: str | None) -> UserApi:
    allowed = SimpleNamespace(
        authorize=lambda cert, expected_kind: SimpleNamespace(
            allowed=True, identity=SimpleNamespace(name="admin", kind="user"), code="", reason=""
        )
    )
    return route_only_api(authorizer=allowed, is_leader=False, leader_api=leader)


@pytest.mark.parametrize(
    ("leader", "status", "code", "location"),
    [
        (None, 503, "no_leader", None),
        ("https://10.0.0.1:8443/", 307, None, "https://10.0.0.1:8443/v1/workloads?dry_run=1"),
    ],
)
async def test_a_write_on_a_follower_goes_to_the_leader_or_is_refused(
    leader: str | None, status: int, code: str | None, location: str | None
) -> None:
    async with TestClient(TestServer(follower(leader).app())) as client:
        resp = await client.post("/v1/workloads?dry_run=1", data=b"{}", allow_redirects=False)
        assert resp.status == status
        if code is not None:
            body = await resp.json()
            assert body["error"]["code"] == code
            assert "no leader elected yet" in body["error"]["message"]
        assert resp.headers.get("Location") == location
