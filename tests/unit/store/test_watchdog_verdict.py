"""The etcd supervisor's restart decision: silence alone is not enough while the member works."""

import pytest

from cloudless.store.etcd_process import (
    BUSY_SILENCE_LIMIT_S,
    IDLE_CPU_S,
    Verdict,
    hung_verdict,
)

LIMIT = 30.0


@pytest.mark.parametrize(
    ("silent_s", "cpu_used_s", "expected"),
    [
        (0.0, 0.0, Verdict.HEALTHY),  # just answered
        (30.0, 0.0, Verdict.HEALTHY),  # at the limit, not past it
        (31.0, 0.0, Verdict.RESTART),  # silent 31 s, no CPU: hung or SIGSTOPped
        (31.0, IDLE_CPU_S / 2, Verdict.RESTART),  # 0.025 CPU s in 31 s: idle
        (31.0, None, Verdict.RESTART),  # CPU unknown: the old rule, silence alone
        (31.0, 4.2, Verdict.SLOW),  # starved but working (4.2 CPU s in 31 s): keep it
        (BUSY_SILENCE_LIMIT_S - 1, 120.0, Verdict.SLOW),  # 299 s, still working
        (BUSY_SILENCE_LIMIT_S, 120.0, Verdict.RESTART),  # 300 s silent: busy or not
    ],
)
def test_hung_verdict(silent_s: float, cpu_used_s: float | None, expected: Verdict) -> None:
    assert hung_verdict(silent_s, cpu_used_s, LIMIT) is expected
