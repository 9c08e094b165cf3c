"""The placement fields a workload uses to choose how it is placed: ``strategy`` and
``availability_target`` (good and bad input, and the round trip)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.lib.errors import ValidationError
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import workload_to_dict


def doc(**placement: Any) -> dict[str, Any]:
    return {"name": "w", "image": "i", "placement": placement}


@pytest.mark.parametrize(
    ("placement", "strategy", "target"),
    [
        ({}, "", 0.0),
        ({"strategy": "pack"}, "pack", 0.0),
        ({"strategy": "Best-Fit"}, "best_fit", 0.0),
        ({"strategy": "spread", "availability_target": 0.999}, "spread", 0.999),
        ({"availability_target": "99.9%"}, "", pytest.approx(0.999)),
        ({"availability_target": 0}, "", 0.0),
    ],
)
def test_good(placement: dict[str, Any], strategy: str, target: float) -> None:
    s = parse_workload(doc(**placement))
    assert s.placement.strategy == strategy
    assert s.placement.availability_target == target
    assert parse_workload(workload_to_dict(s)) == s


@pytest.mark.parametrize(
    ("placement", "problem"),
    [
        ({"strategy": "fastest"}, "spec.placement.strategy: 'fastest' is not a strategy"),
        ({"strategy": 3}, "spec.placement.strategy: 3 is not a string"),
        ({"availability_target": 1}, "spec.placement.availability_target: 1 is not an"),
        ({"availability_target": 1.5}, "spec.placement.availability_target: 1.5 is not"),
        ({"availability_target": -0.1}, "spec.placement.availability_target: -0.1 is not"),
        ({"availability_target": "lots"}, "spec.placement.availability_target: 'lots' is"),
        ({"availability_target": "100%"}, "spec.placement.availability_target: '100%' is"),
        ({"availability_target": True}, "spec.placement.availability_target: True is"),
    ],
)
def test_bad(placement: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_workload(doc(**placement))
    assert any(problem in p for p in e.value.problems), e.value.problems
