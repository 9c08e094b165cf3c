"""Availability traces: the CSV loader (good and bad input) and the synthetic classes."""

from __future__ import annotations

import random

import pytest

from cloudless.churn.fleet import fleet
from cloudless.churn.traces import WEEK_S, dump_csv, load_csv, synthetic
from cloudless.lib.errors import ValidationError

HEAD = "device,class,start_s,end_s,planned\n"


def test_csv_round_trip() -> None:
    text = HEAD + "lap,laptop,0,3600,1\nlap,laptop,7200,9000,0\nsrv,server,0,86400,\n"
    traces = load_csv(text)
    assert traces["lap"].sessions == ((0.0, 3600.0), (7200.0, 9000.0))
    assert traces["lap"].planned == frozenset({3600.0})
    assert traces["srv"].availability(0, 86400) == 1.0
    assert load_csv(dump_csv(traces.values())) == traces


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected the header"),
        ("device,start,end\n", "line 1: expected the header"),
        (HEAD + "a,laptop,0\n", "line 2: expected 5 fields, got 3"),
        (HEAD + ",laptop,0,1,0\n", "line 2: device is empty"),
        (HEAD + "a,laptop,zero,1,0\n", "line 2: start_s and end_s must be numbers"),
        (HEAD + "a,laptop,5,5,0\n", "line 2: need 0 <= start_s < end_s"),
        (HEAD + "a,laptop,-1,5,0\n", "line 2: need 0 <= start_s < end_s"),
        (HEAD + "a,laptop,0,inf,0\n", "line 2: need 0 <= start_s < end_s"),
        (HEAD + "a,laptop,0,5,yes\n", "line 2: planned must be 0 or 1"),
        (HEAD + "a,laptop,0,5,0\na,phone,6,9,0\n", "line 3: device a was class 'laptop'"),
        (HEAD + "a,laptop,0,5,0\na,laptop,4,9,0\n", "line 3: sessions of a must be sorted"),
    ],
)
def test_csv_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        load_csv(text)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("cls", "low", "high"),
    [
        # measured over 20 traces per class, second week (seed 1): see docs/churn.md
        ("server", 0.6, 1.0),
        ("laptop", 0.15, 0.55),
        ("iot", 0.75, 0.97),
        ("phone", 0.2, 0.7),
    ],
)
def test_synthetic_class_shapes(cls: str, low: float, high: float) -> None:
    rng = random.Random(1)
    for i in range(20):
        t = synthetic(cls, f"d{i}", rng)
        assert low <= t.availability(WEEK_S, 2 * WEEK_S) <= high
        ends = {e for _, e in t.sessions}
        assert t.planned <= ends
        assert all(a[1] < b[0] for a, b in zip(t.sessions, t.sessions[1:], strict=False))


def test_unknown_class() -> None:
    with pytest.raises(ValidationError, match="trace class 'toaster'"):
        synthetic("toaster", "t", random.Random(0))


def test_fleet_caps_availability() -> None:
    nodes, traces = fleet(random.Random(3), max_availability=0.9)
    assert len(nodes) == len(traces) == 24
    assert max(t.availability(WEEK_S, 2 * WEEK_S) for t in traces.values()) <= 0.9
