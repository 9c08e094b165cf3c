"""Every user-API route is placed in the RBAC route table; the audit log stays bounded."""

from __future__ import annotations

from cloudless.coordinator.userapi.app import UserApi
from cloudless.lib.clock import FakeClock
from cloudless.policy.audit import AuditEntry, AuditLog, overflow
from cloudless.policy.routes import PUBLIC, ROUTES, SELF, classify
from cloudless.store.memory import MemoryStore
from tests.unit.coordinator.route_api import route_only_api


def _api() -> UserApi:
    return route_only_api()


def test_every_route_is_classified() -> None:
    app = _api().app()
    unmapped = []
    for route in app.router.routes():
        pattern = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or pattern in PUBLIC or pattern in SELF:
            continue
        if (route.method, pattern) not in ROUTES:
            unmapped.append(f"{route.method} {pattern}")
    assert unmapped == []


def test_unmapped_routes_need_every_resource() -> None:
    ra = classify("POST", "/v1/brand-new")
    assert (ra.resource, ra.write) == ("*", True)


def test_overflow_drops_the_oldest() -> None:
    # 5 entries, cap 3 -> the 2 oldest go
    assert overflow(["0003", "0001", "0005", "0002", "0004"], 3) == ["0001", "0002"]
    assert overflow(["1", "2"], 3) == []


def _entry(at: float, allowed: bool = True) -> AuditEntry:
    return AuditEntry(
        at,
        "spiffe://c/user/u",
        "viewer",
        "delete",
        "nodes",
        "",
        "n1",
        allowed,
        "",
        "DELETE",
        "/v1/nodes/n1",
        403,
    )


async def test_audit_log_is_bounded_and_denials_rate_limited() -> None:
    clock = FakeClock(1000.0)
    log = AuditLog(MemoryStore(clock=clock), clock, cap=10, trim_every=5, denied_per_s=3)
    for _ in range(23):
        clock.advance(1.0)
        await log.record(_entry(clock.now()))
    # 23 appends, trimmed to 10 at the 20th, then 3 more: 13 <= cap + trim_every
    kept = await log.tail(0)
    assert len(kept) == 13
    assert kept[-1]["at"] == clock.now()
    for _ in range(10):  # one second, 10 denials: 3 recorded
        await log.record(_entry(clock.now(), allowed=False))
    assert sum(1 for e in await log.tail(0) if not e["allowed"]) == 3


def test_every_route_is_described_in_openapi() -> None:
    from cloudless.coordinator.userapi.openapi import spec

    paths = spec()["paths"]
    missing = []
    for route in _api().app().router.routes():
        pattern = route.resource.canonical if route.resource else ""
        if route.method == "HEAD" or pattern == "/openapi.json":
            continue
        if route.method.lower() not in paths.get(pattern, {}):
            missing.append(f"{route.method} {pattern}")
    assert missing == []
