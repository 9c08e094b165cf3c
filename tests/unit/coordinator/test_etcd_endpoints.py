"""Which etcd members a coordinator's store client dials (``etcd_endpoints``): its own first,
then every other registered member, so the store carries on while its own member restarts."""

from __future__ import annotations

import pytest

from cloudless.coordinator.state.coordinators import CoordinatorInfo, etcd_endpoints


def info(name: str, etcd: str) -> CoordinatorInfo:
    return CoordinatorInfo(name, f"https://{name}:7443", f"{name}:7444", f"{name}:7445", etcd)


CASES = [
    # (own, registered members' etcd addresses, expected)
    ("a:2379", ["a:2379"], ["a:2379"]),  # alone: just its own member
    ("a:2379", [], ["a:2379"]),  # not registered yet
    ("a:2379", ["c:2379", "a:2379", "b:2379"], ["a:2379", "b:2379", "c:2379"]),  # own first
    ("a:2379", ["b:2379", "", "b:2379"], ["a:2379", "b:2379"]),  # memory-store peers, repeats
    ("", ["b:2379", "a:2379"], ["a:2379", "b:2379"]),  # no own member (not embedded)
]


@pytest.mark.parametrize(("own", "registered", "expected"), CASES)
def test_own_member_first_then_the_others(
    own: str, registered: list[str], expected: list[str]
) -> None:
    coords = [info(f"c{i}", e) for i, e in enumerate(registered)]
    assert etcd_endpoints(own, coords) == expected
