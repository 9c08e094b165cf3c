"""The probe state machine, driven by results and explicit times only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudless.agent.health.machine import (
    ProbeState,
    Verdict,
    alive,
    due,
    observe,
    ready,
    start,
)
from cloudless.model.health import Probe, ProbeKind

U, P, F = Verdict.UNKNOWN, Verdict.PASSING, Verdict.FAILING


def probe(succ: int = 1, fail: int = 3, grace: float = 0.0, interval: float = 1.0) -> Probe:
    return Probe(
        ProbeKind.EXEC,
        command=("true",),
        interval_s=interval,
        timeout_s=min(1.0, interval),
        success_threshold=succ,
        failure_threshold=fail,
        start_grace_s=grace,
    )


def run(p: Probe, results: str, start_at: float = 0.0) -> list[Verdict]:
    """Feed results ('+' pass, '-' fail) one interval apart from ``start_at``; verdicts after
    each."""
    s = start(start_at)
    out = []
    for i, r in enumerate(results):
        s, _ = observe(s, p, start_at + i * p.interval_s, r == "+")
        out.append(s.verdict)
    return out


@pytest.mark.parametrize(
    ("p", "results", "verdicts"),
    [
        # success_threshold 1: the first pass decides
        (probe(), "+", [P]),
        # failure_threshold 3: two failures leave it unknown, the third fails it
        (probe(), "---", [U, U, F]),
        # a pass between failures resets the run: - - + - - stays passing after the +
        (probe(), "--+--", [U, U, P, P, P]),
        # ... and the third failure in a row (results 4, 5, 6) fails it
        (probe(), "--+---", [U, U, P, P, P, F]),
        # success_threshold 2: one pass is not enough, and a failing check needs two passes
        (probe(succ=2, fail=1), "+-++-+", [U, F, F, P, F, F]),
        # grace 2.5 s, interval 1 s: results at t=0,1,2 are in grace (not counted); t=3,4,5
        # count, so the check fails on the sixth result (3 counted failures)
        (probe(grace=2.5), "------", [U, U, U, U, U, F]),
        # a pass in grace counts: ready at t=0 even with a grace
        (probe(grace=10), "+", [P]),
        # failure_threshold 1: a single counted failure fails a passing check
        (probe(fail=1), "+-+", [P, F, P]),
    ],
)
def test_verdicts(p: Probe, results: str, verdicts: list[Verdict]) -> None:
    assert run(p, results) == verdicts


def test_timing_is_explicit() -> None:
    p = probe(interval=5.0)
    s = start(100.0)
    assert s.next_at == 100.0 and due(s, 100.0)  # first probe at the start time
    s, change = observe(s, p, 100.2, True, "exit 0")
    assert change is P and s.detail == "exit 0"
    assert s.next_at == 105.2  # 100.2 + 5
    assert not due(s, 105.1) and due(s, 105.2)
    s, change = observe(s, p, 105.3, True)
    assert change is None  # unchanged verdicts are not reported


def test_ready_and_alive() -> None:
    assert ready(None) and alive(None)  # no check: ready and alive
    s = start(0.0)
    assert not ready(s) and alive(s)  # unknown: not ready yet, not judged dead
    assert ready(ProbeState(0, 0, P)) and alive(ProbeState(0, 0, P))
    assert not ready(ProbeState(0, 0, F)) and not alive(ProbeState(0, 0, F))


settings = st.builds(
    probe,
    succ=st.integers(1, 4),
    fail=st.integers(1, 4),
    grace=st.sampled_from([0.0, 1.5, 3.0, 7.0]),
    interval=st.sampled_from([0.5, 1.0, 2.0]),
)
histories = st.lists(
    st.tuples(st.booleans(), st.floats(0.0, 3.0, allow_nan=False)), min_size=1, max_size=40
)


@given(p=settings, history=histories)
def test_properties(p: Probe, history: list[tuple[bool, float]]) -> None:
    """Over any history of results at any (increasing) times:
    * a check becomes failing only on a failure, when the last ``failure_threshold`` results
      all failed and all came after the grace;
    * it becomes passing only on a pass, when the last ``success_threshold`` results passed;
    * the next probe is due one interval after the last result;
    * a failing check only comes back through ``success_threshold`` passes in a row.
    """
    s = start(0.0)
    at = 0.0
    seen: list[tuple[bool, float]] = []
    for ok, gap in history:
        at += gap
        before = s.verdict
        s, change = observe(s, p, at, ok)
        seen.append((ok, at))
        assert s.next_at == at + p.interval_s
        assert (change is None) == (s.verdict is before)
        if s.verdict is F and before is not F:
            last = seen[-p.failure_threshold :]
            assert len(last) == p.failure_threshold
            assert all(not r and t >= p.start_grace_s for r, t in last)
        if s.verdict is P and before is not P:
            last = seen[-p.success_threshold :]
            assert len(last) == p.success_threshold and all(r for r, _ in last)
        if before is F and s.verdict is not F:
            assert s.verdict is P


@given(p=settings, n=st.integers(0, 30))
def test_failures_in_grace_never_fail_a_check(p: Probe, n: int) -> None:
    s = start(0.0)
    for i in range(n):
        at = i * p.start_grace_s / max(n, 1)  # all strictly before the grace ends
        if at >= p.start_grace_s:
            break
        s, _ = observe(s, p, at, False)
    assert s.verdict is U
