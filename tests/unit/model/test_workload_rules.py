"""The spec's shape rules (image grammar, labels, env names, texts, sizes) refuse new input
and never make a spec stored by an earlier version undecodable."""

from __future__ import annotations

from typing import Any

import pytest

from cloudless.coordinator.state.records import WorkloadRecord
from cloudless.lib.errors import ValidationError
from cloudless.model.workload import parse_workload
from cloudless.model.workload_codec import MAX_ITEMS, workload_to_dict

BASE: dict[str, Any] = {"name": "w", "image": "busybox"}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"image": "Busybox"}, "spec.image: image 'Busybox': repository 'library/Busybox'"),
        ({"labels": {"bad key": "x"}}, "spec.labels.bad key: label key 'bad key'"),
        ({"labels": {"tier": "a\nb"}}, "spec.labels.tier: label value 'a\\nb'"),
        ({"env": {"A=B": "x"}}, "spec.env.A=B: variable name 'A=B'"),
        ({"command": ["a\x00"]}, "spec.command[0]: 'a\\x00' holds a NUL character"),
        ({"placement": {"preferred_zones": ["eu\n"]}}, "spec.placement.preferred_zones[0]:"),
        # MAX_ITEMS + 1 = 1025 arguments
        ({"args": ["x"] * (MAX_ITEMS + 1)}, "spec.args: 1025 entries is more than 1024"),
    ],
)
def test_shape_rules_refuse_input_but_not_stored_specs(extra: dict[str, Any], problem: str) -> None:
    doc = {**BASE, **extra}
    with pytest.raises(ValidationError) as ei:
        parse_workload(doc)
    assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems
    stored = parse_workload(doc, stored=True)  # an earlier version accepted it: it decodes
    key = next(iter(extra))
    got, want = workload_to_dict(stored)[key], extra[key]
    if key == "placement":
        got, want = got["preferred_zones"], want["preferred_zones"]
    assert got == want


def test_stored_record_with_an_old_shape_decodes() -> None:
    spec = parse_workload({**BASE, "image": "Busybox", "labels": {"bad key": "x"}}, stored=True)
    rec = WorkloadRecord(spec=spec, created_at=1.0, updated_at=1.0)
    assert WorkloadRecord.from_dict(rec.to_dict()).spec == spec


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"resources": {"cpu": float("inf")}}, "spec.resources.cpu: inf is not a finite number"),
        ({"resources": {"cpu": "inf"}}, 'spec.resources.cpu: "inf" is not a CPU amount'),
        # 2**61 bytes > MAX_BYTES = 2**60
        ({"resources": {"memory": 2**61}}, "spec.resources.memory: 2305843009213693952 is more"),
        ({"stop_timeout": float("nan")}, "spec.stop_timeout: nan is out of range"),
        ({"placement": {"needs_public": "no"}}, "spec.placement.needs_public: 'no' is not true"),
        ({"name": "n" * 100_000}, "spec.name: 'nnnn"),
        ({"ports": [None]}, "spec.ports[0]: is empty"),  # was taken as port 0
    ],
)
def test_numbers_and_names_refused_even_when_stored(extra: dict[str, Any], problem: str) -> None:
    for stored in (False, True):
        with pytest.raises(ValidationError) as ei:
            parse_workload({**BASE, **extra}, stored=stored)
        assert any(p.startswith(problem) for p in ei.value.problems), ei.value.problems
        assert all(len(p) < 300 for p in ei.value.problems)  # no 100 kB echo
