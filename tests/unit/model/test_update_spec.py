"""``update:`` in a workload spec: good values round-trip, bad ones are named by path."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.rollout import UpdatePolicy
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict


def spec(update: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "web", "image": "r/web:1", "update": update, **extra}


def test_parses_and_round_trips() -> None:
    s = parse_workload(spec({"max_surge": 2, "max_unavailable": 0, "progress_deadline": "30s"}))
    assert s.update == UpdatePolicy(max_surge=2, max_unavailable=0, progress_deadline_s=30.0)
    assert parse_workload(workload_to_dict(s)) == s
    # Unset, max_surge stays out of the spec agents receive (older agents do not know it).
    plain = workload_to_dict(parse_workload(spec({"max_unavailable": 2})))
    assert "max_surge" not in plain["update"]


BAD: list[tuple[dict[str, Any], str]] = [
    (spec({"max_surge": -1}), "spec.update.max_surge: -1 is not a whole number 0-10000"),
    (spec({"max_surge": "25%"}), "spec.update.max_surge: '25%' is not a whole number"),
    (spec({"max_surge": True}), "spec.update.max_surge: True is not a whole number"),
    (spec({"max_unavailable": 1.5}), "spec.update.max_unavailable: 1.5 is not a whole number"),
    (spec({"surge": 1}), "spec.update.surge: unknown field"),
    (
        spec({"max_surge": 1}, volumes=[{"name": "data", "mount_path": "/data"}]),
        "spec.update.max_surge: a workload with volumes rolls in place",
    ),
]


@pytest.mark.parametrize(("doc", "why"), BAD)
def test_bad_update_is_named(doc: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(doc)
    assert any(why in p for p in e.value.problems), e.value.problems
