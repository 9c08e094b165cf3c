"""Battery-driven departure: the rule as a table, the watch on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from cloudless.agent.power import Battery, leave_reason, watch_battery
from cloudless.lib.clock import FakeClock


@pytest.mark.parametrize(
    ("battery", "below", "leaves"),
    [
        (None, 15, False),  # no battery: a desktop, a server
        (Battery(10, plugged=True), 15, False),  # low but charging
        (Battery(16, plugged=False), 15, False),  # discharging, still above
        (Battery(15, plugged=False), 15, True),  # at the threshold: leave
        (Battery(3, plugged=False), 15, True),
        (Battery(3, plugged=False), 0, False),  # 0: the rule is off
    ],
)
def test_leave_reason(battery: Battery | None, below: float, leaves: bool) -> None:
    why = leave_reason(battery, below)
    assert (why is not None) is leaves
    if why:
        assert f"battery at {battery.percent:.0f}% and discharging" in why  # type: ignore[union-attr]


async def test_watch_asks_once_when_the_battery_runs_low() -> None:
    clock = FakeClock()
    readings = iter([Battery(40, False), Battery(20, False), Battery(12, True), Battery(12, False)])
    reads: list[float] = []

    async def read() -> Battery | None:
        reads.append(clock.monotonic())
        return next(readings)

    asked: list[str] = []
    task = asyncio.create_task(watch_battery(clock, read, 15, asked.append, interval_s=30))
    for _ in range(5):
        await asyncio.sleep(0)
        await clock.run_for(30, step=1)
    await asyncio.wait_for(task, 1)
    # read at 0, 30, 60 (plugged in: stays), 90 (discharging at 12%: leaves), then stops
    assert len(reads) == 4 and reads[-1] - reads[0] == pytest.approx(90)
    assert asked == ["battery at 12% and discharging (leaves at 15%)"]


async def test_watch_is_off_at_zero() -> None:
    async def read() -> Battery | None:
        raise AssertionError("not read when off")

    await watch_battery(FakeClock(), read, 0, lambda why: None)
