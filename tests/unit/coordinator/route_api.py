"""A ``UserApi`` built only to list its routes (no handler runs) or to run the middleware:
stand-ins for the parts its constructor touches, the real store-backed state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cloudless.coordinator.state.cluster import ClusterState
from cloudless.coordinator.userapi.app import UserApi
from cloudless.lib.clock import FakeClock
from cloudless.store.memory import MemoryStore


def route_only_api(
    *,
    authorizer: Any = None,
    is_leader: bool = True,
    leader_api: str | None = None,
) -> UserApi:
    none: Any = None
    ca: Any = SimpleNamespace(secrets_key=lambda generation: b"k" * 32)
    recorder: Any = SimpleNamespace(emit=None)
    return UserApi(
        state=ClusterState(MemoryStore(clock=FakeClock(0.0))),
        fence=lambda: None,  # type: ignore[arg-type,return-value]
        recorder=recorder,
        ca=ca,
        tokens=none,
        authorizer=authorizer,
        revocations=none,
        clock=FakeClock(0.0),
        is_leader=lambda: is_leader,
        leader_api=lambda: leader_api,
        agent_endpoints=list,
    )
